package pki

import (
	"math/bits"
)

// The first test of a sieved candidate in randomPrime: 2^(n-1) ≡ 1 (mod n)
// for a 1024-bit odd n, with Montgomery squarings written for exactly 16
// words. Almost every candidate is composite and fails here, and this is
// 1.6 times faster than math/big's first Miller-Rabin round (only squarings
// and doublings, no multiplications; no setup). It only filters: a
// candidate that passes is confirmed by math/big's ProbablyPrime, so a
// mistake here could cost time, never accept a composite.
//
// Variable time, like math/big: see keygen.go for why that is acceptable.

const fermatWords = 16 // 1024 bits

type nat1024 [fermatWords]uint64

// mac returns the low and high words of t + a·b + c.
func mac(t, a, b, c uint64) (lo, hi uint64) {
	hi, lo = bits.Mul64(a, b)
	var carry uint64
	// Carries as Add64 inputs stay in the flags register (ADC), which
	// is a third faster than adding them as values.
	lo, carry = bits.Add64(lo, t, 0)
	hi, _ = bits.Add64(hi, 0, carry)
	lo, carry = bits.Add64(lo, c, 0)
	hi, _ = bits.Add64(hi, 0, carry)
	return lo, hi
}

type montgomery1024 struct {
	n    nat1024 // the odd modulus, least significant word first
	nInv uint64  // -n^-1 mod 2^64
}

func newMontgomery1024(n *nat1024) *montgomery1024 {
	m := &montgomery1024{n: *n}
	inv := n[0] // correct to 3 bits for odd n; each Newton step doubles that
	for range 5 {
		inv *= 2 - n[0]*inv
	}
	m.nInv = -inv
	return m
}

// sqr sets z = x²·2^-1024 mod n, for x < n.
func (m *montgomery1024) sqr(z, x *nat1024) {
	const L = fermatWords
	var t [2 * L]uint64
	// The products x[i]·x[j] for i < j, ...
	for i := 0; i < L-1; i++ {
		xi := x[i]
		var c uint64
		j := i + 1
		for ; j+4 <= L; j += 4 { // unrolled: a fifth faster
			t[i+j], c = mac(t[i+j], xi, x[j], c)
			t[i+j+1], c = mac(t[i+j+1], xi, x[j+1], c)
			t[i+j+2], c = mac(t[i+j+2], xi, x[j+2], c)
			t[i+j+3], c = mac(t[i+j+3], xi, x[j+3], c)
		}
		for ; j < L; j++ {
			t[i+j], c = mac(t[i+j], xi, x[j], c)
		}
		t[i+L] = c
	}
	// ... doubled, plus the squares x[i]².
	t[2*L-1] = t[2*L-2] >> 63
	for i := 2*L - 2; i > 0; i-- {
		t[i] = t[i]<<1 | t[i-1]>>63
	}
	t[0] <<= 1
	var c uint64
	for i := 0; i < L; i++ {
		hi, lo := bits.Mul64(x[i], x[i])
		t[2*i], c = bits.Add64(t[2*i], lo, c)
		t[2*i+1], c = bits.Add64(t[2*i+1], hi, c)
	}
	// Montgomery reduction: add multiples of n that clear the low words.
	var top uint64
	n := &m.n
	for i := 0; i < L; i++ {
		mi := t[i] * m.nInv
		row := (*[L]uint64)(t[i : i+L])
		var c uint64
		for j := 0; j < L; j += 4 {
			row[j], c = mac(row[j], mi, n[j], c)
			row[j+1], c = mac(row[j+1], mi, n[j+1], c)
			row[j+2], c = mac(row[j+2], mi, n[j+2], c)
			row[j+3], c = mac(row[j+3], mi, n[j+3], c)
		}
		t[i+L], top = bits.Add64(t[i+L], c, top)
	}
	// The result (top:t[L:]) is below 2n: subtract n once if needed.
	var s nat1024
	var borrow uint64
	for i := 0; i < L; i++ {
		s[i], borrow = bits.Sub64(t[L+i], m.n[i], borrow)
	}
	if top == 1 || borrow == 0 {
		*z = s
	} else {
		copy(z[:], t[L:])
	}
}

// double sets x = 2x mod n, for x < n.
func (m *montgomery1024) double(x *nat1024) {
	var d, s nat1024
	var out uint64
	for i := 0; i < fermatWords; i++ {
		d[i] = x[i]<<1 | out
		out = x[i] >> 63
	}
	var borrow uint64
	for i := 0; i < fermatWords; i++ {
		s[i], borrow = bits.Sub64(d[i], m.n[i], borrow)
	}
	if out == 1 || borrow == 0 {
		*x = s
	} else {
		*x = d
	}
}

// fermat2 reports whether 2^(n-1) ≡ 1 (mod n) for an odd n of exactly
// 1024 bits, given as big-endian words. Every prime passes.
func fermat2(be []uint64) bool {
	var n nat1024
	for i := range n {
		n[i] = be[fermatWords-1-i]
	}
	if n[0]&1 == 0 || n[fermatWords-1]>>63 == 0 {
		panic("fermat2: n is not an odd 1024-bit number")
	}
	m := newMontgomery1024(&n)
	// In Montgomery form x stands for x·2^-1024. One is 2^1024 mod n,
	// which is 2^1024 - n since 2^1023 ≤ n < 2^1024.
	var one nat1024
	var borrow uint64
	for i := range one {
		one[i], borrow = bits.Sub64(0, n[i], borrow)
	}
	// Left to right over the bits of n-1, which are n's but for bit 0:
	// square, and double for each 1 bit. The top bit (1023) makes x = 2.
	x := one
	m.double(&x)
	for i := 1022; i >= 0; i-- {
		m.sqr(&x, &x)
		if i > 0 && n[i/64]>>(i%64)&1 == 1 {
			m.double(&x)
		}
	}
	return x == one
}
