package stripesim

import (
	crand "crypto/rand"
	"encoding/binary"
	"math/rand/v2"
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Lengths of the random part of ids, close to what Stripe uses.
const (
	longID  = 24 // pi_, ch_, sub_, price_
	shortID = 14 // cus_, si_, req_, prod_
)

// instanceNonce is 64 random bits that make one simulator's id stream its
// own, whatever its Seed.
func instanceNonce() uint64 {
	var b [8]byte
	_, _ = crand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return binary.LittleEndian.Uint64(b[:])
}

// randomID returns prefix followed by n base62 characters from rng, so that
// ids are reproducible when rng is seeded alone (Config.ReproducibleIDs). Ten characters come from each
// 64-bit draw (62^10 < 2^64); the slight bias does not matter for ids.
func randomID(rng *rand.Rand, prefix string, n int) string {
	b := make([]byte, len(prefix)+n)
	copy(b, prefix)
	var u uint64
	left := 0
	for i := len(prefix); i < len(b); i++ {
		if left == 0 {
			u, left = rng.Uint64(), 10
		}
		b[i] = base62[u%62]
		u /= 62
		left--
	}
	return string(b)
}
