package measure

import (
	"crypto/sha256"
	"encoding/binary"
)

// HashesTableSize is the size of QEMU's PaddedSevHashTable: a 18-byte header,
// three 50-byte entries, zero-padded to a multiple of 16.
const HashesTableSize = 176

const (
	hashTableLen = 16 + 2 + 3*hashEntryLen // 168, the header's length field
	hashEntryLen = 16 + 2 + sha256.Size    // 50
)

// SEVHashesTable builds the table QEMU writes into the firmware's hashes
// area for -kernel/-initrd/-append under SEV (target/i386/sev.c,
// PaddedSevHashTable): header GUID and length, then the cmdline, initrd and
// kernel entries in that order, each GUID, length and SHA-256.
func SEVHashesTable(kernelHash, initrdHash, cmdlineHash [sha256.Size]byte) [HashesTableSize]byte {
	var t [HashesTableSize]byte
	copy(t[0:16], guidHashTableHdr[:])
	binary.LittleEndian.PutUint16(t[16:], hashTableLen)
	off := 18
	for _, e := range []struct {
		g guid
		h [sha256.Size]byte
	}{{guidHashCmdline, cmdlineHash}, {guidHashInitrd, initrdHash}, {guidHashKernel, kernelHash}} {
		copy(t[off:], e.g[:])
		binary.LittleEndian.PutUint16(t[off+16:], hashEntryLen)
		copy(t[off+18:], e.h[:])
		off += hashEntryLen
	}
	return t
}

// CmdlineHash is the SHA-256 QEMU records for -append: the command line
// with its terminating NUL (a lone NUL when there is none).
func CmdlineHash(cmdline string) [sha256.Size]byte {
	b := make([]byte, len(cmdline)+1)
	copy(b, cmdline)
	return sha256.Sum256(b)
}

// hashesPage is the 4 KiB SNP_KERNEL_HASHES page: zeros with the table at the
// hashes area's offset within its page.
func hashesPage(table *[HashesTableSize]byte, offsetInPage uint32) []byte {
	page := make([]byte, pageSize)
	copy(page[offsetInPage:], table[:])
	return page
}
