package dashboard

import (
	"crypto/rsa"
	"io"
	"math/big"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

// waitReady waits until p holds n keys.
func waitReady(t *testing.T, p *keyPool, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for p.ready() < n {
		if time.Now().After(deadline) {
			t.Fatalf("pool holds %d keys after 60 s, want %d", p.ready(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestKeyPool: keys from the pool are valid RSA-2048 keys from
// pki.GenerateKey, all distinct, handed out once (a refilled pool holds
// new keys), never more than the pool's size at once; a miss generates
// inline; close drops the keys and take still works.
func TestKeyPool(t *testing.T) {
	const size = 4
	var made atomic.Int64
	p := newKeyPool(size, 2, func() (*rsa.PrivateKey, error) {
		made.Add(1)
		return pki.GenerateKey()
	}, t.Logf)
	defer p.close()
	seen := map[string]bool{}
	check := func(k *rsa.PrivateKey) {
		t.Helper()
		if k.N.BitLen() != 2048 {
			t.Errorf("key of %d bits, want 2048", k.N.BitLen())
		}
		if err := k.Validate(); err != nil {
			t.Errorf("invalid key: %v", err)
		}
		if err := pki.PairwiseCheck(k); err != nil {
			t.Error(err)
		}
		if seen[k.N.String()] {
			t.Error("the same key handed out twice")
		}
		seen[k.N.String()] = true
	}
	for round := range 2 {
		waitReady(t, p, size)
		time.Sleep(50 * time.Millisecond) // the workers would overfill now if they could
		if m := made.Load(); m != int64(size*(round+1)) {
			t.Errorf("round %d: %d keys made, want %d (the pool keeps at most %d)", round, m, size*(round+1), size)
		}
		for range size {
			k, err := p.take()
			if err != nil {
				t.Fatal(err)
			}
			check(k)
		}
	}
	if h, m := p.hits.Load(), p.misses.Load(); h != 2*size || m != 0 {
		t.Errorf("hits %d misses %d, want %d and 0", h, m, 2*size)
	}

	p.close()
	if p.ready() != 0 {
		t.Errorf("%d keys left after close", p.ready())
	}
	k, err := p.take() // after close: a miss, generated inline
	if err != nil {
		t.Fatal(err)
	}
	check(k)
	if m := p.misses.Load(); m != 1 {
		t.Errorf("misses %d after a take from a closed pool, want 1", m)
	}
	p.close() // twice is fine
}

// TestKeyPoolDisabled: size 0 starts no workers and every take generates
// inline (a miss); a nil pool (no StartKeyPool) generates and counts nothing.
func TestKeyPoolDisabled(t *testing.T) {
	p := newKeyPool(0, 4, func() (*rsa.PrivateKey, error) { return pki.GenerateKey() }, nil)
	defer p.close()
	for range 2 {
		k, err := p.take()
		if err != nil || k.N.BitLen() != 2048 {
			t.Fatalf("take from a disabled pool: %v", err)
		}
	}
	if p.ready() != 0 || p.hits.Load() != 0 || p.misses.Load() != 2 {
		t.Errorf("disabled pool: ready %d hits %d misses %d, want 0 0 2", p.ready(), p.hits.Load(), p.misses.Load())
	}
	var nilPool *keyPool
	if k, err := nilPool.take(); err != nil || k.N.BitLen() != 2048 {
		t.Fatalf("take from a nil pool: %v", err)
	}
	nilPool.close()

	var s Server
	if _, err := s.participantKey(); err != nil {
		t.Fatal(err)
	}
	s.StartKeyPool(0)
	if _, err := s.participantKey(); err != nil {
		t.Fatal(err)
	}
	if n, h, m := s.keyPoolStats(); n != 0 || h != 0 || m != 1 {
		t.Errorf("StartKeyPool(0): ready %d hits %d misses %d, want 0 0 1", n, h, m)
	}
	s.keys.Load().close()
}

// TestKeyPoolConcurrentTakers: many goroutines taking at once while the
// workers refill never get the same key (run with -race). The generator
// is a stand-in so that thousands of takes are cheap; each key it makes is
// a new object numbered in E.
func TestKeyPoolConcurrentTakers(t *testing.T) {
	var n atomic.Int64
	p := newKeyPool(16, 4, func() (*rsa.PrivateKey, error) {
		return &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: big.NewInt(1), E: int(n.Add(1))}}, nil
	}, nil)
	defer p.close()
	waitReady(t, p, 16)
	const takers, each = 32, 200
	var (
		mu   sync.Mutex
		seen = map[*rsa.PrivateKey]bool{}
		nums = map[int]bool{}
		wg   sync.WaitGroup
		dup  atomic.Int64
		gate = make(chan struct{})
	)
	for range takers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			for range each {
				k, err := p.take()
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[k] || nums[k.E] {
					dup.Add(1)
				}
				seen[k], nums[k.E] = true, true
				mu.Unlock()
			}
		}()
	}
	close(gate)
	wg.Wait()
	if d := dup.Load(); d != 0 {
		t.Errorf("%d keys handed out more than once", d)
	}
	h, m := p.hits.Load(), p.misses.Load()
	if h+m != takers*each || h == 0 {
		t.Errorf("hits %d + misses %d, want %d with some hits", h, m, takers*each)
	}
	t.Logf("%d takes: %d hits, %d misses", takers*each, h, m)
}

// TestKeyPoolServer: StartKeyPool fills the pool in the background,
// /metrics shows its size, hits and misses, kit keys come from it, and
// Close stops it and drops the keys.
func TestKeyPoolServer(t *testing.T) {
	cred, _ := ParseCredential(diffCred)
	s, err := Open(t.TempDir(), &cred, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s.Log = nil
	s.StartKeyPool(2)
	p := s.keys.Load()
	waitReady(t, p, 2)
	if _, err := s.participantKey(); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, m := range []string{"flare_dashboard_key_pool_keys ", "flare_dashboard_key_pool_hits_total 1", "flare_dashboard_key_pool_misses_total 0"} {
		if !strings.Contains(body, m) {
			t.Errorf("/metrics has no %q", m)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if p.ready() != 0 {
		t.Errorf("%d keys left after Close", p.ready())
	}
}
