package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"math/big"
	"testing"
)

func TestGenerateRSAKey(t *testing.T) {
	seen := map[string]bool{}
	for range 8 {
		key, err := generateRSAKey(rand.Reader, ParticipantKeyBits)
		if err != nil {
			t.Fatal(err)
		}
		if err := key.Validate(); err != nil {
			t.Fatalf("Validate: %v", err)
		}
		if got := key.N.BitLen(); got != ParticipantKeyBits {
			t.Fatalf("modulus has %d bits, want %d", got, ParticipantKeyBits)
		}
		if key.E != 65537 || len(key.Primes) != 2 {
			t.Fatalf("e = %d, %d primes", key.E, len(key.Primes))
		}
		p, q := key.Primes[0], key.Primes[1]
		for _, x := range key.Primes {
			if x.BitLen() != ParticipantKeyBits/2 || x.Bit(x.BitLen()-2) != 1 {
				t.Errorf("prime of %d bits, second bit %d", x.BitLen(), x.Bit(x.BitLen()-2))
			}
			if !x.ProbablyPrime(20) {
				t.Errorf("factor is not prime")
			}
			if new(big.Int).Mod(x, big.NewInt(65537)).Int64() == 1 {
				t.Errorf("prime is 1 mod e")
			}
		}
		if new(big.Int).Mul(p, q).Cmp(key.N) != 0 {
			t.Fatal("n != p*q")
		}
		if seen[key.N.String()] || seen[p.String()] || seen[q.String()] {
			t.Fatal("a modulus or prime came out twice")
		}
		seen[key.N.String()], seen[p.String()], seen[q.String()] = true, true, true

		digest := sha256.Sum256([]byte("kit file"))
		opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA256}
		sig, err := rsa.SignPSS(rand.Reader, key, crypto.SHA256, digest[:], opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := rsa.VerifyPSS(&key.PublicKey, crypto.SHA256, digest[:], sig, opts); err != nil {
			t.Fatalf("PSS round trip: %v", err)
		}
		back, err := ParseKeyPEM(KeyPEM(key))
		if err != nil || !back.Equal(key) {
			t.Fatalf("PEM round trip: %v", err)
		}
	}
}

// A composite with no factor below the sieve limit gets past the sieve;
// the primality step must reject it.
func TestPrimalityRejectsSieveFreeComposite(t *testing.T) {
	table := smallPrimes()
	a, err := rand.Prime(rand.Reader, 512)
	if err != nil {
		t.Fatal(err)
	}
	b, err := rand.Prime(rand.Reader, 512)
	if err != nil {
		t.Fatal(err)
	}
	n := new(big.Int).Mul(a, b)
	words := make([]uint64, 16)
	buf := n.FillBytes(make([]byte, 128))
	for i := range words {
		words[i] = new(big.Int).SetBytes(buf[8*i : 8*i+8]).Uint64()
	}
	res := make([]uint32, len(table.primes))
	table.residues(words, res)
	composite := make([]bool, 1)
	table.sieve(res, composite)
	if composite[0] {
		t.Fatal("the sieve rejects a product of two 512-bit primes")
	}
	if n.ProbablyPrime(primalityRounds) {
		t.Fatal("ProbablyPrime accepts a product of two 512-bit primes")
	}
	// A Carmichael number, a Fermat liar for every base coprime to it.
	if big.NewInt(561).ProbablyPrime(primalityRounds) {
		t.Fatal("ProbablyPrime accepts 561")
	}
}

// The sieve's residues and marks agree with math/big.
func TestSieve(t *testing.T) {
	table := smallPrimes()
	if table.primes[0] != 3 || table.primes[len(table.primes)-1] >= sieveLimit {
		t.Fatalf("primes %d..%d", table.primes[0], table.primes[len(table.primes)-1])
	}
	buf := make([]byte, 128)
	rand.Read(buf)
	buf[127] |= 1
	x := new(big.Int).SetBytes(buf)
	words := make([]uint64, 16)
	for i := range words {
		words[i] = new(big.Int).SetBytes(buf[8*i : 8*i+8]).Uint64()
	}
	res := make([]uint32, len(table.primes))
	table.residues(words, res)
	for i, p := range table.primes {
		if want := new(big.Int).Mod(x, big.NewInt(int64(p))).Uint64(); uint64(res[i]) != want {
			t.Fatalf("x mod %d = %d, want %d", p, res[i], want)
		}
	}
	const step = 2 * 300
	table.step(res, step)
	x.Add(x, big.NewInt(step))
	composite := make([]bool, 300)
	table.sieve(res, composite)
	y := new(big.Int)
	for j, c := range composite {
		y.Add(x, big.NewInt(int64(2*j)))
		want := new(big.Int).Mod(y, big.NewInt(65537)).Int64() == 1
		for _, p := range table.primes {
			if new(big.Int).Mod(y, big.NewInt(int64(p))).Sign() == 0 {
				want = true
				break
			}
		}
		if c != want {
			t.Fatalf("candidate x+%d: marked %v, want %v", 2*j, c, want)
		}
	}
}

// fermat2 agrees with math/big: primes pass, products of two primes and
// random odd 1024-bit numbers fail as math/big's 2^(n-1) mod n says.
func TestFermat2(t *testing.T) {
	words := func(x *big.Int) []uint64 {
		return wordsOf(x, make([]byte, 128), make([]uint64, 16))
	}
	two, one := big.NewInt(2), big.NewInt(1)
	want := func(n *big.Int) bool {
		return new(big.Int).Exp(two, new(big.Int).Sub(n, one), n).Cmp(one) == 0
	}
	for range 5 {
		p, err := rand.Prime(rand.Reader, 1024)
		if err != nil {
			t.Fatal(err)
		}
		if !fermat2(words(p)) {
			t.Fatalf("fermat2 rejects the prime %x", p)
		}
		a, _ := rand.Prime(rand.Reader, 512)
		b, _ := rand.Prime(rand.Reader, 512)
		if n := new(big.Int).Mul(a, b); n.BitLen() == 1024 && fermat2(words(n)) {
			t.Fatalf("fermat2 accepts the composite %x", n)
		}
	}
	for range 200 {
		buf := make([]byte, 128)
		rand.Read(buf)
		buf[0] |= 0x80
		buf[127] |= 1
		n := new(big.Int).SetBytes(buf)
		if got := fermat2(words(n)); got != want(n) {
			t.Fatalf("fermat2(%x) = %v, math/big says %v", n, got, want(n))
		}
	}
	// Edge values: the smallest and largest odd 1024-bit numbers, and the
	// largest 1024-bit prime (all words but the lowest all ones).
	top := new(big.Int).Sub(new(big.Int).Lsh(one, 1024), one)
	for !top.ProbablyPrime(20) {
		top.Sub(top, two)
	}
	for _, n := range []*big.Int{new(big.Int).Add(new(big.Int).Lsh(one, 1023), one),
		new(big.Int).Sub(new(big.Int).Lsh(one, 1024), one), top} {
		if got := fermat2(words(n)); got != want(n) {
			t.Fatalf("fermat2(%x) = %v, math/big says %v", n, got, want(n))
		}
	}
	if !fermat2(words(top)) {
		t.Fatal("fermat2 rejects the largest 1024-bit prime")
	}
}

// The assembly squaring (where the CPU has it) equals the Go one, on
// random values below random moduli and on values that carry through
// every word.
func TestMontgomerySqrADX(t *testing.T) {
	if !useADX {
		t.Skip("no ADX/BMI2 squaring on this CPU")
	}
	words := func(x *big.Int) *nat1024 {
		var n nat1024
		be := wordsOf(x, make([]byte, 128), make([]uint64, 16))
		for i := range n {
			n[i] = be[15-i]
		}
		return &n
	}
	one := big.NewInt(1)
	for range 50 {
		buf := make([]byte, 128)
		rand.Read(buf)
		buf[0] |= 0x80
		buf[127] |= 1
		nb := new(big.Int).SetBytes(buf)
		m := newMontgomery1024(words(nb))
		xs := []*big.Int{big.NewInt(0), one, new(big.Int).Sub(nb, one), new(big.Int).Sub(nb, big.NewInt(2)),
			new(big.Int).Rsh(nb, 1), new(big.Int).Sub(new(big.Int).Lsh(one, 1023), one)}
		for range 20 {
			x, _ := rand.Int(rand.Reader, nb)
			xs = append(xs, x)
		}
		for _, xb := range xs {
			if xb.Cmp(nb) >= 0 {
				continue
			}
			x := words(xb)
			var got, want nat1024
			m.sqr(&got, x)
			m.sqrGeneric(&want, x)
			if got != want {
				t.Fatalf("n=%x x=%x: assembly %x, Go %x", nb, xb, got, want)
			}
		}
	}
	// n = 2^1024-1 - 2k for small k: every word all ones, the longest carries.
	nb := new(big.Int).Sub(new(big.Int).Lsh(one, 1024), big.NewInt(3))
	m := newMontgomery1024(words(nb))
	x := words(new(big.Int).Sub(nb, one))
	for range 100 {
		var got, want nat1024
		m.sqr(&got, x)
		m.sqrGeneric(&want, x)
		if got != want {
			t.Fatalf("all-ones modulus: assembly %x, Go %x", got, want)
		}
		*x = got
	}
}
