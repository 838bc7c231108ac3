package pki

// RSA-2048 key generation on math/big and our own Fermat filter
// (fermat.go), about twice as fast as crypto/rsa.GenerateKey in Go 1.26
// (23 ms of CPU per key with the amd64 assembly squaring, 30 ms without,
// against 42-51 ms on the benchmark machine; see BenchmarkGenerateKey and
// BenchmarkRSAGenerateKey).
//
// Why this exists: a federation of a thousand sites needs a thousand keys,
// and key generation was 83% of the provider's CPU time. crypto/rsa's FIPS
// 140 module tests each random candidate with constant-time arithmetic
// after trial division by 255 primes only. Keys are made once, on the
// operator's machine, during `terraform apply`: not a path an attacker can
// time, so variable-time arithmetic is acceptable here. Everything that
// signs with these keys still goes through crypto/rsa.
//
// The method is the usual one (as in OpenSSL): a random odd start with the
// top two bits set, then the first candidate after it, in steps of 2, that
// has no prime factor below sieveLimit (an incremental sieve: the start's
// residues are computed once and stepped), is not 1 mod 65537 (so e=65537
// is invertible), passes a base-2 Fermat test and then math/big's
// ProbablyPrime. The key is then built and checked by crypto/rsa itself
// (Precompute and Validate).

import (
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"math/bits"
	"sync"
)

const (
	// keyE is the public exponent NVFlare's keys use.
	keyE = 65537

	// sieveLimit bounds the small primes a candidate is sieved by. Deeper
	// sieving leaves fewer composites for the Fermat test (0.2-0.37 ms
	// each; about 30 candidates are tested per prime found), but every new
	// start costs one division per prime. 2^16, 2^17, 2^18 and 2^20 (6500
	// to 82000 primes) measured within a few percent of each other.
	sieveLimit = 1 << 18

	// sieveWindow is how many odd candidates one sieve pass covers: a
	// 1024-bit prime is found within 355 odd numbers on average.
	sieveWindow = 2048

	// primalityRounds is what ProbablyPrime gets: 4 Miller-Rabin rounds
	// with pseudo-random bases plus one with base 2, then a Lucas test
	// (together Baillie-PSW, which no composite is known to pass). FIPS
	// 186-5 table B.1 asks 5 Miller-Rabin rounds for 1024-bit primes at
	// error probability 2^-112 (RSA-2048's security level), and 5 is what
	// crypto/rsa itself runs for this size.
	primalityRounds = 4
)

// sieveTable is the odd primes below sieveLimit, grouped so that the product
// of each group fits in 64 bits: one pass of 64-bit divisions over a
// candidate's words gives the residues of a whole group.
type sieveTable struct {
	primes []uint32
	groups []primeGroup
}

type primeGroup struct {
	product uint64
	end     int // primes[previous end:end] belong to this group
}

var smallPrimes = sync.OnceValue(func() *sieveTable {
	composite := make([]bool, sieveLimit)
	t := &sieveTable{}
	for i := 3; i < sieveLimit; i += 2 {
		if composite[i] {
			continue
		}
		t.primes = append(t.primes, uint32(i))
		for j := i * i; j < sieveLimit; j += 2 * i {
			composite[j] = true
		}
	}
	product := uint64(1)
	for i, p := range t.primes {
		hi, lo := bits.Mul64(product, uint64(p))
		if hi != 0 {
			t.groups = append(t.groups, primeGroup{product: product, end: i})
			lo = uint64(p)
		}
		product = lo
	}
	t.groups = append(t.groups, primeGroup{product: product, end: len(t.primes)})
	return t
})

// residues sets res[i] to x mod primes[i]. words is x as big-endian 64-bit
// words.
func (t *sieveTable) residues(words []uint64, res []uint32) {
	start := 0
	for _, g := range t.groups {
		var r uint64
		for _, w := range words {
			_, r = bits.Div64(r, w, g.product)
		}
		for i := start; i < g.end; i++ {
			res[i] = uint32(r % uint64(t.primes[i]))
		}
		start = g.end
	}
}

// sieve marks in composite[j] the candidates x+2j (x with residues res)
// that a small prime divides, or that are 1 mod keyE.
func (t *sieveTable) sieve(res []uint32, composite []bool) {
	clear(composite)
	n := uint64(len(composite))
	for i, p32 := range t.primes {
		p, r := uint64(p32), uint64(res[i])
		half := (p + 1) / 2 // the inverse of 2 mod p
		// x + 2j ≡ 0 (mod p)  ⇔  j ≡ -r/2 (mod p)
		for j := (p - r) % p * half % p; j < n; j += p {
			composite[j] = true
		}
		if p == keyE {
			// x + 2j ≡ 1 (mod e): gcd(e, candidate-1) would be e.
			for j := (p + 1 - r) % p * half % p; j < n; j += p {
				composite[j] = true
			}
		}
	}
}

// step moves the residues from x to x+delta.
func (t *sieveTable) step(res []uint32, delta uint64) {
	for i, p := range t.primes {
		res[i] = uint32((uint64(res[i]) + delta) % uint64(p))
	}
}

// randomPrime returns a prime of exactly bits bits (a multiple of 64) with
// its top two bits set and p-1 coprime to keyE.
func randomPrime(random io.Reader, bits int) (*big.Int, error) {
	if bits < 128 || bits%64 != 0 {
		return nil, fmt.Errorf("randomPrime: %d bits is not supported", bits)
	}
	t := smallPrimes()
	buf := make([]byte, bits/8)
	words := make([]uint64, bits/64)
	res := make([]uint32, len(t.primes))
	composite := make([]bool, sieveWindow)
	base, cand, off := new(big.Int), new(big.Int), new(big.Int)
	for {
		if _, err := io.ReadFull(random, buf); err != nil {
			return nil, fmt.Errorf("random prime: %w", err)
		}
		buf[0] |= 0xc0 // p·q then has exactly 2·bits bits
		buf[len(buf)-1] |= 1
		base.SetBytes(buf)
		t.residues(wordsOf(base, buf, words), res)
		// A few windows from one start, then a fresh start; running past
		// 2^bits (only from starts just below it) also takes a fresh start.
		for range 8 {
			t.sieve(res, composite)
			for j, c := range composite {
				if c {
					continue
				}
				cand.Add(base, off.SetUint64(2*uint64(j)))
				if cand.BitLen() != bits {
					break
				}
				if bits == 64*fermatWords && !fermat2(wordsOf(cand, buf, words)) {
					continue
				}
				if cand.ProbablyPrime(primalityRounds) {
					return cand, nil
				}
			}
			base.Add(base, off.SetUint64(2*sieveWindow))
			if base.BitLen() != bits {
				break
			}
			t.step(res, 2*sieveWindow)
		}
	}
}

// wordsOf sets words to x as big-endian 64-bit words, with buf (8 bytes
// per word) as scratch, and returns words.
func wordsOf(x *big.Int, buf []byte, words []uint64) []uint64 {
	x.FillBytes(buf)
	for i := range words {
		words[i] = binary.BigEndian.Uint64(buf[8*i:])
	}
	return words
}

// generateRSAKey makes an RSA key of bits bits with e = 65537 from two
// random primes, and has crypto/rsa check it.
func generateRSAKey(random io.Reader, bits int) (*rsa.PrivateKey, error) {
	if bits%128 != 0 {
		return nil, fmt.Errorf("generate RSA key: %d bits is not supported", bits)
	}
	one := big.NewInt(1)
	minDiff := new(big.Int).Lsh(one, uint(bits/2-100))
	e := big.NewInt(keyE)
	for {
		p, err := randomPrime(random, bits/2)
		if err != nil {
			return nil, err
		}
		q, err := randomPrime(random, bits/2)
		if err != nil {
			return nil, err
		}
		// |p-q| > 2^(bits/2-100) (FIPS 186-5 A.1.3): p = q or close primes
		// would make n easy to factor. Random primes fail this with
		// probability 2^-97.
		if diff := new(big.Int).Sub(p, q); diff.CmpAbs(minDiff) <= 0 {
			continue
		}
		if p.Cmp(q) < 0 {
			p, q = q, p // p > q, as OpenSSL orders them
		}
		n := new(big.Int).Mul(p, q)
		if n.BitLen() != bits {
			return nil, errors.New("generate RSA key: modulus has the wrong size")
		}
		pm1, qm1 := new(big.Int).Sub(p, one), new(big.Int).Sub(q, one)
		// d = e^-1 mod λ(n), λ(n) = lcm(p-1, q-1), as crypto/rsa and FIPS 186-5.
		gcd := new(big.Int).GCD(nil, nil, pm1, qm1)
		lambda := new(big.Int).Mul(pm1, new(big.Int).Quo(qm1, gcd))
		d := new(big.Int).ModInverse(e, lambda)
		if d == nil {
			continue // cannot happen: the sieve keeps p-1 and q-1 coprime to e
		}
		if d.BitLen() <= bits/2 {
			continue // FIPS 186-5 A.1.1: d > 2^(nlen/2); probability about 2^-1024
		}
		key := &rsa.PrivateKey{
			PublicKey: rsa.PublicKey{N: n, E: keyE},
			D:         d,
			Primes:    []*big.Int{p, q},
			Precomputed: rsa.PrecomputedValues{
				Dp:   new(big.Int).Mod(d, pm1),
				Dq:   new(big.Int).Mod(d, qm1),
				Qinv: new(big.Int).ModInverse(q, p),
			},
		}
		// With the CRT values set, Precompute hands them to crypto/rsa's
		// own key checks (n = pq, e·dP ≡ 1 mod p-1, e·dQ ≡ 1 mod q-1,
		// q·qInv ≡ 1 mod p, |p-q| and d bounds); Validate reports them.
		key.Precompute()
		if err := key.Validate(); err != nil {
			return nil, fmt.Errorf("generate RSA key: %w", err)
		}
		return key, nil
	}
}
