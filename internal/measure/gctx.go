package measure

import (
	"crypto/sha512"
	"encoding/binary"
	"runtime"
	"sync"
)

// Page types of the SNP ABI PAGE_INFO structure.
const (
	pageTypeNormal     = 0x01
	pageTypeVMSA       = 0x02
	pageTypeZero       = 0x03
	pageTypeUnmeasured = 0x04
	pageTypeSecrets    = 0x05
	pageTypeCPUID      = 0x06
)

// vmsaGPA is the GPA recorded for VMSA pages: (u64)-1, page-aligned, with
// every bit above 51 cleared.
const vmsaGPA = 0xFFFFFFFFF000

const pageInfoLen = 0x70

// gctx is the SNP guest context: the running launch digest.
type gctx struct {
	ld  [sha512.Size384]byte
	buf [pageInfoLen]byte
}

var zeroDigest [sha512.Size384]byte

// update extends the digest with one PAGE_INFO record (SNP ABI, "Layout of
// the PAGE_INFO structure"): digest so far, page contents digest, length
// 0x70, page type, IMI 0, VMPL3..1 permissions 0, reserved 0, GPA.
func (g *gctx) update(pageType byte, gpa uint64, contents *[sha512.Size384]byte) {
	b := &g.buf
	copy(b[0x00:0x30], g.ld[:])
	copy(b[0x30:0x60], contents[:])
	binary.LittleEndian.PutUint16(b[0x60:], pageInfoLen)
	b[0x62] = pageType
	b[0x63] = 0                         // is_imi
	b[0x64], b[0x65], b[0x66] = 0, 0, 0 // vmpl3, vmpl2, vmpl1 permissions
	b[0x67] = 0                         // reserved
	binary.LittleEndian.PutUint64(b[0x68:], gpa)
	g.ld = sha512.Sum384(b[:])
}

// updateNormalDigests adds NORMAL pages whose contents digests are known.
func (g *gctx) updateNormalDigests(gpa uint64, digests [][sha512.Size384]byte) {
	for i := range digests {
		g.update(pageTypeNormal, gpa+uint64(i)*pageSize, &digests[i])
	}
}

// updateUnmeasured adds size/4096 pages of a type whose contents digest is
// all zeros (ZERO, UNMEASURED, SECRETS, CPUID).
func (g *gctx) updateUnmeasured(pageType byte, gpa uint64, size uint64) {
	for off := uint64(0); off < size; off += pageSize {
		g.update(pageType, gpa+off, &zeroDigest)
	}
}

// pageDigests returns SHA-384 of every 4 KiB page of data (a whole number of
// pages), spreading the work over the available CPUs: the pages are
// independent, only the chain over them is sequential.
func pageDigests(data []byte) [][sha512.Size384]byte {
	n := len(data) / pageSize
	out := make([][sha512.Size384]byte, n)
	workers := runtime.GOMAXPROCS(0)
	if workers > n/64 {
		workers = n / 64
	}
	if workers <= 1 {
		for i := range out {
			out[i] = sha512.Sum384(data[i*pageSize : (i+1)*pageSize])
		}
		return out
	}
	var wg sync.WaitGroup
	chunk := (n + workers - 1) / workers
	for w := 0; w < workers; w++ {
		lo, hi := w*chunk, min((w+1)*chunk, n)
		if lo >= hi {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := lo; i < hi; i++ {
				out[i] = sha512.Sum384(data[i*pageSize : (i+1)*pageSize])
			}
		}()
	}
	wg.Wait()
	return out
}
