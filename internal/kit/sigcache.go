package kit

import (
	"crypto"
	"crypto/sha256"
	"errors"
	"sync"
)

// SignatureCache signs signature.json entries with one signer and keeps
// them by content, so the files every kit of a federation has (rootCA.pem,
// start.sh, stop_fl.sh, the local/ defaults) are signed once per apply
// instead of once per kit: 7 of each client kit's 11 RSA-PSS signatures.
// An entry signs the file's content only (NVFlare's sign_content), so a
// signature made for one kit verifies in every other kit with the same
// file. Safe for concurrent use.
type SignatureCache struct {
	signer crypto.Signer
	mu     sync.Mutex
	sigs   map[[sha256.Size]byte]string
}

// maxCachedSignatures bounds the cache; past it, signatures are made but
// not kept. Per-kit files (keys, certificates, fed_client.json) never
// repeat, so a long apply would otherwise keep every one of them.
const maxCachedSignatures = 4096

// NewSignatureCache returns a cache for signer's signatures.
func NewSignatureCache(signer crypto.Signer) *SignatureCache {
	return &SignatureCache{signer: signer, sigs: map[[sha256.Size]byte]string{}}
}

// Sign returns the signature.json entry (base64 RSA-PSS) of data, made now
// or earlier by this cache's signer.
func (c *SignatureCache) Sign(data []byte) (string, error) {
	key := sha256.Sum256(data)
	c.mu.Lock()
	s, ok := c.sigs[key]
	c.mu.Unlock()
	if ok {
		return s, nil
	}
	s, err := SignContent(data, c.signer)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	if len(c.sigs) < maxCachedSignatures {
		c.sigs[key] = s
	}
	c.mu.Unlock()
	return s, nil
}

// signFolder is SignFolder through in's cache when it has one.
func signFolder(files []File, in Input) ([]byte, error) {
	c := in.Signatures
	if c == nil {
		return SignFolder(files, in.Signer)
	}
	// The same key, not necessarily the same Signer value (comparing
	// interface values could panic on an uncomparable Signer type).
	if pub, ok := c.signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(in.Signer.Public()) {
		return nil, errors.New("the signature cache belongs to another signer")
	}
	return signEach(files, c.Sign)
}
