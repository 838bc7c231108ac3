package luks

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strconv"
)

// LUKS2 binary header (LUKS2 spec §2, big-endian), 4096 bytes, followed
// by the JSON area; the whole hdr_size is covered by the checksum.
const (
	l2BinSize  = 4096
	l2HdrSize  = 8   // u64
	l2SeqID    = 16  // u64
	l2CsumAlg  = 72  // char[32]
	l2UUID     = 168 // char[40]
	l2HdrOff   = 256 // u64
	l2Csum     = 448 // [64]
	l2MinHdr   = 16 << 10
	l2MaxHdr   = 4 << 20
	l2SlotArea = 512 // key material sector size
)

// Offsets a secondary header may be at (LUKS2 spec §2.1), for when the
// primary is too damaged to say.
var l2SecondaryOffsets = []int64{0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000}

// The JSON metadata, only the fields used. Sizes and offsets are JSON
// strings holding decimal uint64 (the spec's choice, for 64-bit range).
type l2Meta struct {
	Keyslots map[string]l2Keyslot `json:"keyslots"`
	Segments map[string]l2Segment `json:"segments"`
	Digests  map[string]l2Digest  `json:"digests"`
	Config   struct {
		Requirements struct {
			Mandatory []string `json:"mandatory"`
		} `json:"requirements"`
	} `json:"config"`
}

type l2Keyslot struct {
	Type     string `json:"type"`
	KeySize  int    `json:"key_size"`
	Priority *int   `json:"priority"`
	AF       struct {
		Type    string `json:"type"`
		Stripes int    `json:"stripes"`
		Hash    string `json:"hash"`
	} `json:"af"`
	Area struct {
		Type       string `json:"type"`
		Offset     string `json:"offset"`
		Size       string `json:"size"`
		Encryption string `json:"encryption"`
		KeySize    int    `json:"key_size"`
	} `json:"area"`
	KDF struct {
		Type       string `json:"type"`
		Hash       string `json:"hash"`
		Iterations uint64 `json:"iterations"`
		Time       uint64 `json:"time"`
		Memory     uint64 `json:"memory"`
		CPUs       uint64 `json:"cpus"`
		Salt       string `json:"salt"`
	} `json:"kdf"`
}

type l2Segment struct {
	Type       string `json:"type"`
	Offset     string `json:"offset"`
	Size       string `json:"size"`
	IVTweak    string `json:"iv_tweak"`
	Encryption string `json:"encryption"`
	SectorSize int    `json:"sector_size"`
}

type l2Digest struct {
	Type       string   `json:"type"`
	Keyslots   []string `json:"keyslots"`
	Segments   []string `json:"segments"`
	Hash       string   `json:"hash"`
	Iterations uint64   `json:"iterations"`
	Salt       string   `json:"salt"`
	Digest     string   `json:"digest"`
}

// l2Header is one checked copy of the header.
type l2Header struct {
	seqID   uint64
	hdrSize int64
	uuid    string
	json    []byte
}

// readHeader2 reads and checks the header copy at off.
func readHeader2(r io.ReaderAt, off int64, magic []byte) (*l2Header, error) {
	bin := make([]byte, l2BinSize)
	if _, err := r.ReadAt(bin, off); err != nil {
		return nil, fmt.Errorf("reading header: %w", err)
	}
	if !bytes.Equal(bin[:6], magic) || binary.BigEndian.Uint16(bin[6:]) != 2 {
		return nil, errors.New("magic/version")
	}
	size := binary.BigEndian.Uint64(bin[l2HdrSize:])
	if size < l2MinHdr || size > l2MaxHdr || size&(size-1) != 0 {
		return nil, fmt.Errorf("hdr_size %d invalid", size)
	}
	if got := binary.BigEndian.Uint64(bin[l2HdrOff:]); got != uint64(off) {
		return nil, fmt.Errorf("hdr_offset %d, but the header is at %d", got, off)
	}
	if alg := cstring(bin[l2CsumAlg : l2CsumAlg+32]); alg != "sha256" {
		return nil, fmt.Errorf("checksum_alg %q not supported", alg)
	}
	all := make([]byte, size)
	copy(all, bin)
	if _, err := r.ReadAt(all[l2BinSize:], off+l2BinSize); err != nil {
		return nil, fmt.Errorf("reading JSON area: %w", err)
	}
	// The checksum is over the whole header with its own field zeroed.
	want := bytes.Clone(all[l2Csum : l2Csum+sha256.Size])
	clear(all[l2Csum : l2Csum+64])
	if sum := sha256.Sum256(all); !bytes.Equal(sum[:], want) {
		return nil, errors.New("checksum mismatch")
	}
	js := all[l2BinSize:]
	if i := bytes.IndexByte(js, 0); i >= 0 {
		js = js[:i]
	}
	return &l2Header{
		seqID: binary.BigEndian.Uint64(bin[l2SeqID:]), hdrSize: int64(size),
		uuid: cstring(bin[l2UUID : l2UUID+40]), json: js,
	}, nil
}

// header2 returns the valid header copy with the highest seqid, as
// cryptsetup does; a damaged primary falls back to the secondary.
func header2(r io.ReaderAt) (*l2Header, error) {
	primary, perr := readHeader2(r, 0, magic1)
	offsets := l2SecondaryOffsets
	if perr == nil {
		offsets = []int64{primary.hdrSize}
	}
	best := primary
	for _, off := range offsets {
		if sec, err := readHeader2(r, off, magic2); err == nil {
			if best == nil || sec.seqID > best.seqID {
				best = sec
			}
			break
		}
	}
	if best == nil {
		return nil, fmt.Errorf("luks2: primary header: %w (and no valid secondary)", perr)
	}
	return best, nil
}

func u64str(field, s string) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%s %q is not a size", field, s)
	}
	return v, nil
}

func b64(field, s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return b, nil
}

func open2(r io.ReaderAt, pass []byte, lim limits) (*Volume, error) {
	hdr, err := header2(r)
	if err != nil {
		return nil, err
	}
	var m l2Meta
	if err := json.Unmarshal(hdr.json, &m); err != nil {
		return nil, fmt.Errorf("luks2: JSON metadata: %w", err)
	}
	if req := m.Config.Requirements.Mandatory; len(req) > 0 {
		// e.g. online-reencrypt-v2: an unfinished reencryption, whose
		// data is partly in the old and partly in the new layout.
		return nil, fmt.Errorf("luks2: config.requirements.mandatory %q not supported", req)
	}

	// The data segment.
	if len(m.Segments) != 1 {
		return nil, fmt.Errorf("luks2: segments: %d segments, want 1", len(m.Segments))
	}
	var segID string
	var seg l2Segment
	for segID, seg = range m.Segments { // the only one
	}
	if seg.Type != "crypt" {
		return nil, fmt.Errorf("luks2: segment %s: type %q not supported", segID, seg.Type)
	}
	if seg.Encryption != CipherAESXTSPlain64 {
		return nil, fmt.Errorf("luks2: segment %s: encryption %q not supported (only %s)", segID, seg.Encryption, CipherAESXTSPlain64)
	}
	if ss := seg.SectorSize; ss < 512 || ss > 4096 || ss&(ss-1) != 0 {
		return nil, fmt.Errorf("luks2: segment %s: sector_size %d invalid", segID, ss)
	}
	if seg.IVTweak != "0" {
		return nil, fmt.Errorf("luks2: segment %s: iv_tweak %q not supported", segID, seg.IVTweak)
	}
	payload, err := u64str("segment "+segID+" offset", seg.Offset)
	if err != nil {
		return nil, fmt.Errorf("luks2: %w", err)
	}
	if payload < 2*hdr.hdrSize || payload%int64(seg.SectorSize) != 0 {
		return nil, fmt.Errorf("luks2: segment %s: offset %d inside the header or not sector aligned", segID, payload)
	}
	var size int64
	if seg.Size != "dynamic" {
		if size, err = u64str("segment "+segID+" size", seg.Size); err != nil {
			return nil, fmt.Errorf("luks2: %w", err)
		}
		if size == 0 || size%int64(seg.SectorSize) != 0 {
			return nil, fmt.Errorf("luks2: segment %s: size %d not a whole number of sectors", segID, size)
		}
	}

	// The digest that vouches for that segment's key.
	var dg *l2Digest
	for _, id := range slices.Sorted(maps.Keys(m.Digests)) {
		if d := m.Digests[id]; slices.Contains(d.Segments, segID) {
			dg = &d
			break
		}
	}
	if dg == nil {
		return nil, fmt.Errorf("luks2: digests: none for segment %s", segID)
	}
	if dg.Type != "pbkdf2" {
		return nil, fmt.Errorf("luks2: digest type %q not supported", dg.Type)
	}
	dHash, err := newHash(dg.Hash)
	if err != nil {
		return nil, fmt.Errorf("luks2: digest hash: %w", err)
	}
	dSalt, err := b64("luks2: digest salt", dg.Salt)
	if err != nil {
		return nil, err
	}
	dWant, err := b64("luks2: digest digest", dg.Digest)
	if err != nil {
		return nil, err
	}
	if len(dWant) == 0 {
		return nil, errors.New("luks2: digest digest is empty")
	}

	// Key slots bound to that digest: priority high (2) first, then
	// normal (1); 0 means "ignore unless named", as in cryptsetup.
	type cand struct {
		id   string
		prio int
	}
	var cands []cand
	for _, id := range dg.Keyslots {
		ks, ok := m.Keyslots[id]
		if !ok {
			return nil, fmt.Errorf("luks2: digest names key slot %s, which does not exist", id)
		}
		prio := 1
		if ks.Priority != nil {
			prio = *ks.Priority
		}
		if prio > 0 {
			cands = append(cands, cand{id, prio})
		}
	}
	sort.SliceStable(cands, func(i, j int) bool {
		if cands[i].prio != cands[j].prio {
			return cands[i].prio > cands[j].prio
		}
		a, _ := strconv.Atoi(cands[i].id)
		b, _ := strconv.Atoi(cands[j].id)
		return a < b
	})
	var slots []slot
	var skipped []error
	for _, c := range cands {
		s, err := slot2(c.id, m.Keyslots[c.id], hdr.hdrSize, payload, lim)
		if err != nil {
			skipped = append(skipped, err)
			continue
		}
		slots = append(slots, s)
	}
	key, err := tryAll(r, pass, slots, func(key []byte) (bool, error) {
		d, err := pbkdf2Key(dHash, key, dSalt, dg.Iterations, len(dWant), lim)
		if err != nil {
			return false, fmt.Errorf("digest: %w", err)
		}
		return subtle.ConstantTimeCompare(d, dWant) == 1, nil
	})
	if err != nil {
		return nil, errors.Join(append([]error{err}, skipped...)...)
	}
	return &Volume{
		Version: 2, UUID: hdr.uuid, Cipher: CipherAESXTSPlain64, Key: key,
		PayloadOffset: payload, PayloadSize: size,
		// LUKS2 counts the IV in 512-byte sectors whatever the sector size
		// (cryptsetup's --iv-large-sectors is for plain mode only).
		SectorSize: seg.SectorSize,
	}, nil
}

// slot2 checks a LUKS2 key slot and turns it into a slot.
func slot2(id string, ks l2Keyslot, hdrSize, payload int64, lim limits) (slot, error) {
	name := "key slot " + id
	bad := func(format string, a ...any) (slot, error) {
		return slot{}, fmt.Errorf("luks2: "+name+": "+format, a...)
	}
	if ks.Type != "luks2" {
		return bad("type %q not supported", ks.Type)
	}
	if ks.KeySize != 32 && ks.KeySize != 64 {
		return bad("key_size %d not supported for aes-xts", ks.KeySize)
	}
	if ks.AF.Type != "luks1" || ks.AF.Stripes < 1 || ks.AF.Stripes > 4000 {
		return bad("af %s with %d stripes not supported", ks.AF.Type, ks.AF.Stripes)
	}
	afHash, err := newHash(ks.AF.Hash)
	if err != nil {
		return bad("af hash: %v", err)
	}
	if ks.Area.Type != "raw" || ks.Area.Encryption != CipherAESXTSPlain64 {
		return bad("area %s/%s not supported", ks.Area.Type, ks.Area.Encryption)
	}
	off, err := u64str("area offset", ks.Area.Offset)
	if err != nil {
		return bad("%v", err)
	}
	size, err := u64str("area size", ks.Area.Size)
	if err != nil {
		return bad("%v", err)
	}
	// Key material lies after both header copies and before the data.
	if off < 2*hdrSize || off%l2SlotArea != 0 || size > payload || off > payload-size {
		return bad("area offset %d size %d outside the key slots area", off, size)
	}
	salt, err := b64("kdf salt", ks.KDF.Salt)
	if err != nil {
		return bad("%v", err)
	}
	kdf := ks.KDF
	var derive func(pass []byte, n int) ([]byte, error)
	switch kdf.Type {
	case "pbkdf2":
		h, err := newHash(kdf.Hash)
		if err != nil {
			return bad("kdf hash: %v", err)
		}
		derive = func(pass []byte, n int) ([]byte, error) {
			return pbkdf2Key(h, pass, salt, kdf.Iterations, n, lim)
		}
	case "argon2i", "argon2id":
		id := kdf.Type == "argon2id"
		derive = func(pass []byte, n int) ([]byte, error) {
			return argon2Key(id, pass, salt, kdf.Time, kdf.Memory, kdf.CPUs, n, lim)
		}
	default:
		return bad("kdf type %q not supported", kdf.Type)
	}
	return slot{
		name: name, derive: derive, keyLen: ks.KeySize,
		areaOff: off, areaLen: size, slotKey: ks.Area.KeySize,
		stripes: ks.AF.Stripes, afHash: afHash,
	}, nil
}
