package dashboard

import (
	"crypto/rsa"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

// DefaultKeyPool is the number of participant keys flare-dashboard keeps
// generated ahead of kit downloads (--key-pool).
const DefaultKeyPool = 32

// keyPool keeps up to size RSA-2048 participant keys (pki.GenerateKey)
// ready for kit downloads, made in the background on spare cores. A key is
// handed out once and forgotten by the pool; keys live only in memory and
// are never logged or written anywhere, so a restart starts empty. take
// generates inline when no key is ready.
type keyPool struct {
	gen   func() (*rsa.PrivateKey, error)
	keys  chan *rsa.PrivateKey // ready keys
	slots chan struct{}        // one token per key the workers may still make: keys ready + being made <= size
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
	logf  func(format string, args ...any)

	hits, misses atomic.Uint64
}

// keyPoolWorkers is GOMAXPROCS-1, at least 1: the pool uses spare cores.
func keyPoolWorkers() int { return max(runtime.GOMAXPROCS(0)-1, 1) }

// newKeyPool starts workers goroutines filling a pool of size keys made by
// gen. size 0 is a disabled pool: no workers, every take a miss.
func newKeyPool(size, workers int, gen func() (*rsa.PrivateKey, error), logf func(string, ...any)) *keyPool {
	p := &keyPool{gen: gen, keys: make(chan *rsa.PrivateKey, max(size, 0)),
		slots: make(chan struct{}, max(size, 0)), stop: make(chan struct{}), logf: logf}
	for range max(size, 0) {
		p.slots <- struct{}{}
	}
	if size > 0 {
		for range max(workers, 1) {
			p.wg.Add(1)
			go p.work()
		}
	}
	return p
}

func (p *keyPool) work() {
	defer p.wg.Done()
	for {
		select {
		case <-p.stop:
			return
		case <-p.slots:
		}
		key, err := p.gen()
		if err != nil {
			p.slots <- struct{}{}
			if p.logf != nil {
				p.logf("key pool: %v (retrying in 1 s)", err)
			}
			select {
			case <-p.stop:
				return
			case <-time.After(time.Second):
			}
			continue
		}
		p.keys <- key // never blocks: a slot was taken for it
	}
}

// take returns a ready key (a hit) or generates one now (a miss). A nil
// pool generates with pki.GenerateKey and counts nothing.
func (p *keyPool) take() (*rsa.PrivateKey, error) {
	if p == nil {
		return pki.GenerateKey()
	}
	select {
	case key := <-p.keys:
		p.slots <- struct{}{} // never blocks: the key held a slot
		p.hits.Add(1)
		return key, nil
	default:
	}
	p.misses.Add(1)
	return p.gen()
}

// ready is the number of keys in the pool now.
func (p *keyPool) ready() int {
	if p == nil {
		return 0
	}
	return len(p.keys)
}

// close stops the workers, waits for them and drops the keys left. take
// still works afterwards (every call a miss).
func (p *keyPool) close() {
	if p == nil {
		return
	}
	p.once.Do(func() {
		close(p.stop)
		p.wg.Wait()
		for {
			select {
			case <-p.keys:
			default:
				return
			}
		}
	})
}

// StartKeyPool keeps up to n participant keys generated ahead of kit
// downloads, on GOMAXPROCS-1 background workers (at least 1); n 0 disables
// the pool (every kit makes its key inline). Call it before serving; Close
// stops the workers and drops the keys. Calling it again replaces the pool.
func (s *Server) StartKeyPool(n int) {
	var logf func(string, ...any)
	if s.Log != nil {
		logf = s.Log.Printf
	}
	old := s.keys.Swap(newKeyPool(n, keyPoolWorkers(), pki.GenerateKey, logf))
	old.close()
}

// participantKey is the key of a new kit: from the pool when one is ready.
func (s *Server) participantKey() (*rsa.PrivateKey, error) {
	return s.keys.Load().take()
}

// keyPoolStats is the pool's size, hits and misses for /metrics (zeros
// without a pool).
func (s *Server) keyPoolStats() (ready int, hits, misses uint64) {
	p := s.keys.Load()
	if p == nil {
		return 0, 0, 0
	}
	return p.ready(), p.hits.Load(), p.misses.Load()
}
