package measure

import (
	"bytes"
	"crypto/sha256"
	"hash"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Cache remembers what SNPLaunchDigest derives from input files, the OVMF
// page chain and the SHA-256 of kernel and initrd, by file identity (path,
// device, inode, size, mtime, ctime), so that measuring the same files for
// several vCPU counts or types hashes them once. Only inputs given by path
// are cached, only on Unix, and only files whose ctime is older than a few
// seconds when read: a file rewritten within one timestamp tick of being read
// could otherwise keep its identity. A Cache is safe for concurrent use.
type Cache struct {
	mu      sync.Mutex
	max     int
	entries map[cacheKey]*cacheEntry
	order   []cacheKey // insertion order, for eviction
	hits    int
}

type fileID struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64
}

type cacheKey struct {
	kind string // "ovmf" or "sha256"
	path string
	id   fileID
}

type cacheEntry struct {
	ovmf  *OVMF
	chain [DigestSize]byte
	sum   [sha256.Size]byte
}

// racyWindow is how old a file's ctime must be for its digest to be cached.
var racyWindow = 2 * time.Second

// NewCache returns a cache holding up to maxEntries files (16 if <= 0).
func NewCache(maxEntries int) *Cache {
	if maxEntries <= 0 {
		maxEntries = 16
	}
	return &Cache{max: maxEntries, entries: map[cacheKey]*cacheEntry{}}
}

// Hits is how many file reads the cache has saved.
func (c *Cache) Hits() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits
}

func (c *Cache) get(k cacheKey) *cacheEntry {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[k]
	if e != nil {
		c.hits++
	}
	return e
}

func (c *Cache) put(k cacheKey, e *cacheEntry) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[k]; ok {
		return
	}
	for len(c.order) >= c.max {
		delete(c.entries, c.order[0])
		c.order = c.order[1:]
	}
	c.entries[k] = e
	c.order = append(c.order, k)
}

// openFile is an input file opened for reading, with the identity it had
// when opened.
type openFile struct {
	*os.File
	key       cacheKey
	cacheable bool
}

func openInput(input, kind, path string) (*openFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, inputErr(input, "cannot read %s: %v", inputName(input), err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, inputErr(input, "cannot read %s: %v", inputName(input), err)
	}
	if fi.IsDir() {
		f.Close()
		return nil, inputErr(input, "%s path %s is a directory", inputName(input), path)
	}
	id, ctime, ok := statID(f)
	return &openFile{File: f, key: cacheKey{kind, path, id}, cacheable: ok && time.Since(ctime) > racyWindow}, nil
}

// unchanged reports whether the file still has the identity it was opened
// with, after it has been read.
func (f *openFile) unchanged() bool {
	id, _, ok := statID(f.File)
	return ok && f.cacheable && id == f.key.id
}

// loadOVMF reads and parses the firmware at path; chain is set when the
// cache already knows its page chain. store must be called with the chain
// once computed.
func loadOVMF(c *Cache, path string) (o *OVMF, chain *[DigestSize]byte, store func([DigestSize]byte), err error) {
	f, err := openInput("OVMF", "ovmf", path)
	if err != nil {
		return nil, nil, nil, err
	}
	defer f.Close()
	if f.cacheable {
		if e := c.get(f.key); e != nil {
			return e.ovmf, &e.chain, func([DigestSize]byte) {}, nil
		}
	}
	data, err := readAll(f.File)
	if err != nil {
		return nil, nil, nil, inputErr("OVMF", "cannot read OVMF: %v", err)
	}
	if err := checkOVMFSize(len(data)); err != nil {
		return nil, nil, nil, err
	}
	o, err = ParseOVMF(data)
	if err != nil {
		return nil, nil, nil, &InputError{Input: "OVMF", Err: err}
	}
	keep := c != nil && f.unchanged()
	return o, nil, func(ch [DigestSize]byte) {
		if keep {
			c.put(f.key, &cacheEntry{ovmf: o, chain: ch})
		}
	}, nil
}

// sha256Of hashes data, or the file at path when path is set.
func sha256Of(c *Cache, input string, data []byte, path string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	if path == "" {
		return sha256.Sum256(data), nil
	}
	f, err := openInput(input, "sha256", path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	if f.cacheable {
		if e := c.get(f.key); e != nil {
			return e.sum, nil
		}
	}
	h := sha256.New()
	if err := hashPipelined(h, f); err != nil {
		return sum, inputErr(input, "cannot read %s: %v", inputName(input), err)
	}
	h.Sum(sum[:0])
	if c != nil && f.unchanged() {
		c.put(f.key, &cacheEntry{sum: sum})
	}
	return sum, nil
}

// inputName is how messages name an input: "OVMF", "kernel", "initrd".
func inputName(input string) string {
	if input == "OVMF" {
		return input
	}
	return strings.ToLower(input)
}

// hashPipelined feeds r to h, reading the next chunk while the last one is
// hashed: for a kernel-sized file this hides the copy from the page cache
// behind the hashing, which is the longest step of a measurement.
func hashPipelined(h hash.Hash, r io.Reader) error {
	const chunks = 3
	free := make(chan []byte, chunks)
	full := make(chan []byte, chunks)
	for i := 0; i < chunks; i++ {
		free <- *(chunkPool.Get().(*[]byte))
	}
	defer func() {
		for i := 0; i < chunks; i++ {
			b := <-free
			chunkPool.Put(&b)
		}
	}()
	errc := make(chan error, 1)
	go func() {
		defer close(full)
		for {
			buf := <-free
			n, err := io.ReadFull(r, buf)
			if n > 0 {
				full <- buf[:n]
			} else {
				free <- buf
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				errc <- nil
				return
			}
			if err != nil {
				errc <- err
				return
			}
		}
	}()
	for b := range full {
		h.Write(b)
		free <- b[:cap(b)]
	}
	return <-errc
}

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// readAll reads a whole file into a buffer sized from its length.
func readAll(f *os.File) ([]byte, error) {
	size := 0
	if fi, err := f.Stat(); err == nil && fi.Size() < 1<<32 {
		size = int(fi.Size())
	}
	buf := bytes.NewBuffer(make([]byte, 0, size+512))
	_, err := buf.ReadFrom(f)
	return buf.Bytes(), err
}
