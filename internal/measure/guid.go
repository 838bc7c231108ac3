package measure

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// guid is a GUID in its on-disk EFI byte order: the first three groups
// little-endian, the last two as written (Python's uuid.bytes_le).
type guid [16]byte

func mustGUID(s string) guid {
	parts := strings.Split(s, "-")
	if len(parts) != 5 {
		panic("measure: bad GUID " + s)
	}
	raw, err := hex.DecodeString(strings.Join(parts, ""))
	if err != nil || len(raw) != 16 {
		panic("measure: bad GUID " + s)
	}
	var g guid
	g[0], g[1], g[2], g[3] = raw[3], raw[2], raw[1], raw[0]
	g[4], g[5] = raw[5], raw[4]
	g[6], g[7] = raw[7], raw[6]
	copy(g[8:], raw[8:])
	return g
}

// String gives the canonical lower-case text form.
func (g guid) String() string {
	return fmt.Sprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%x-%x",
		g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8:10], g[10:])
}

// GUIDs of the OVMF footer table (edk2 OvmfPkg/ResetVector) and of QEMU's
// SEV hashes table (target/i386/sev.c).
var (
	guidFooterTable  = mustGUID("96b582de-1fb2-45f7-baea-a366c55a082d")
	guidSevHashTable = mustGUID("7255371f-3a3b-4b04-927b-1da6efa8d454")
	guidSevESReset   = mustGUID("00f771de-1a7e-4fcb-890e-68c77e2fb44e")
	guidSevMetadata  = mustGUID("dc886566-984a-4798-a75e-5585a7bf67cc")
	guidHashTableHdr = mustGUID("9438d606-4f22-4cc9-b479-a793d411fd21")
	guidHashCmdline  = mustGUID("97d02dd8-bd20-4c94-aa78-e7714d36ab2a")
	guidHashInitrd   = mustGUID("44baf731-3a2f-4bd7-9af1-41e29169781d")
	guidHashKernel   = mustGUID("4de79437-abd2-427f-b835-d5b172d2045b")
)
