package launch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// A qcow2 header can make QEMU open other host files: a backing file
// (header field backing_file_offset, with the backing format header
// extension) and an external data file (incompatible feature bit 2 with
// the data file name extension), which QEMU opens read-write. QEMU runs
// with the agent's privileges, so a kit drive that names any host path
// could read or overwrite it. CheckImage refuses every such reference.
//
// Header layout (QEMU docs/interop/qcow2.txt), big-endian:
//
//	 0 magic "QFI\xfb"          4 version (2 or 3)
//	 8 backing_file_offset u64 16 backing_file_size u32
//	20 cluster_bits u32        24 size u64
//	32 crypt_method u32        ...
//	72 incompatible_features   80 compatible_features (version 3)
//	88 autoclear_features      96 refcount_order u32
//	100 header_length u32      then header extensions: type u32, length
//	u32, data padded to 8 bytes, until type 0.
const (
	qcow2Magic = "QFI\xfb"

	qcow2IncompatDirty       = 1 << 0
	qcow2IncompatCorrupt     = 1 << 1
	qcow2IncompatDataFile    = 1 << 2
	qcow2IncompatCompression = 1 << 3
	qcow2IncompatExtL2       = 1 << 4
	// qcow2IncompatKnown are the bits of the spec; an image with any other
	// bit needs a QEMU feature this agent cannot judge.
	qcow2IncompatKnown = qcow2IncompatDirty | qcow2IncompatCorrupt | qcow2IncompatDataFile | qcow2IncompatCompression | qcow2IncompatExtL2

	qcow2AutoclearRawData = 1 << 1 // "data file is raw": meaningful only with a data file

	qcow2ExtEnd           = 0x00000000
	qcow2ExtBackingFormat = 0xe2792aca
	qcow2ExtFeatureTable  = 0x6803f857
	qcow2ExtBitmaps       = 0x23852875
	qcow2ExtCrypto        = 0x0537be77
	qcow2ExtDataFile      = 0x44415441
)

// ErrExternalReference marks a drive image that names another file.
var ErrExternalReference = errors.New("drive image names a file outside itself")

// CheckImage reads the header of a drive image of the given format (as
// launch.json says and as QEMU is told with format=) from r, the open file
// QEMU will be given, and refuses a qcow2 image that names a backing file,
// an external data file or any other outside reference, is marked corrupt,
// or uses header features this agent does not know. name is for messages.
// A raw image has no header QEMU interprets (format=raw never probes).
func CheckImage(r io.ReaderAt, name, format string) error {
	switch format {
	case "raw":
		return nil
	case "qcow2":
	default:
		return fmt.Errorf("drive %s: format %q: only qcow2 and raw", name, format)
	}
	var h [104]byte
	n, err := r.ReadAt(h[:], 0)
	if n < 72 {
		if err == nil || errors.Is(err, io.EOF) {
			err = fmt.Errorf("%d bytes", n)
		}
		return fmt.Errorf("drive %s is not a qcow2 image (header unreadable: %v); launch.json says format qcow2", name, err)
	}
	if string(h[0:4]) != qcow2Magic {
		return fmt.Errorf("drive %s is not a qcow2 image (no QFI magic); launch.json says format qcow2", name)
	}
	be := binary.BigEndian
	version := be.Uint32(h[4:])
	backingOff, backingLen := be.Uint64(h[8:]), be.Uint32(h[16:])
	clusterBits := be.Uint32(h[20:])
	cryptMethod := be.Uint32(h[32:])
	if version != 2 && version != 3 {
		return fmt.Errorf("drive %s: qcow2 version %d is not 2 or 3", name, version)
	}
	if clusterBits < 9 || clusterBits > 21 {
		return fmt.Errorf("drive %s: qcow2 cluster_bits %d out of range", name, clusterBits)
	}
	clusterSize := uint64(1) << clusterBits
	var problems []string
	if backingOff != 0 || backingLen != 0 {
		what := fmt.Sprintf("a backing file (header backing_file_offset %d, %d bytes)", backingOff, backingLen)
		if backingOff != 0 && backingLen > 0 && backingLen <= 1023 && backingOff+uint64(backingLen) <= clusterSize {
			b := make([]byte, backingLen)
			if _, err := r.ReadAt(b, int64(backingOff)); err == nil {
				what = fmt.Sprintf("the backing file %q", cleanName(b))
			}
		}
		problems = append(problems, what)
	}
	if cryptMethod > 2 {
		problems = append(problems, fmt.Sprintf("unknown crypt_method %d", cryptMethod))
	}
	extStart := uint64(72)
	if version == 3 {
		if n < 104 {
			return fmt.Errorf("drive %s: qcow2 version 3 header is cut short (%d bytes)", name, n)
		}
		incompat, autoclear := be.Uint64(h[72:]), be.Uint64(h[88:])
		hdrLen := be.Uint32(h[100:])
		if hdrLen < 104 || uint64(hdrLen) > clusterSize {
			return fmt.Errorf("drive %s: qcow2 header_length %d out of range", name, hdrLen)
		}
		extStart = uint64(hdrLen)
		if incompat&qcow2IncompatDataFile != 0 {
			problems = append(problems, "an external data file (incompatible feature bit 2)")
		}
		if incompat&qcow2IncompatCorrupt != 0 {
			problems = append(problems, "the corrupt flag (incompatible feature bit 1): check it with qemu-img check")
		}
		if unknown := incompat &^ qcow2IncompatKnown; unknown != 0 {
			problems = append(problems, fmt.Sprintf("unknown incompatible features 0x%x", unknown))
		}
		if autoclear&qcow2AutoclearRawData != 0 {
			problems = append(problems, "the raw external data autoclear bit (a data file layout)")
		}
	}
	// Header extensions, all inside the first cluster.
	for off, i := extStart, 0; ; i++ {
		if i > 1024 || off+8 > clusterSize {
			problems = append(problems, "header extensions that do not end within the first cluster")
			break
		}
		var eh [8]byte
		if _, err := r.ReadAt(eh[:], int64(off)); err != nil {
			return fmt.Errorf("drive %s: qcow2 header extension at %d: %v", name, off, err)
		}
		typ, l := be.Uint32(eh[:4]), uint64(be.Uint32(eh[4:]))
		if typ == qcow2ExtEnd {
			break
		}
		if off+8+l > clusterSize {
			problems = append(problems, fmt.Sprintf("header extension 0x%08x longer than the first cluster", typ))
			break
		}
		switch typ {
		case qcow2ExtBackingFormat:
			problems = append(problems, "a backing file format (header extension 0xe2792aca)")
		case qcow2ExtDataFile:
			what := "an external data file name (header extension 0x44415441)"
			if l > 0 && l <= 4096 {
				b := make([]byte, l)
				if _, err := r.ReadAt(b, int64(off+8)); err == nil {
					what = fmt.Sprintf("the external data file %q (header extension 0x44415441)", cleanName(b))
				}
			}
			problems = append(problems, what)
		case qcow2ExtFeatureTable, qcow2ExtBitmaps, qcow2ExtCrypto:
			// Inside the image: feature names, dirty bitmaps, the LUKS
			// header's place.
		}
		off += 8 + (l+7)&^7
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: drive %s is refused: its qcow2 header names %s. QEMU would open such files on this host with the agent's rights; "+
			"a kit's drives must be self-contained (rebuild them with flare_cvm_kit, or `qemu-img convert -O qcow2` them into standalone images)",
			ErrExternalReference, name, strings.Join(problems, " and "))
	}
	return nil
}

// cleanName makes a header string printable.
func cleanName(b []byte) string {
	s := strings.TrimRight(string(b), "\x00")
	return strings.ToValidUTF8(s, "?")
}
