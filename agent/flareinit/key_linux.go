package flareinit

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/guestconfig"
	kbsclient "github.com/flarekit/terraform-provider-flare/kbs/client"
)

// Key broker retries: the broker (or the network) may come up after the
// guest; a refusal is final.
const (
	keyAttempts = 6
	keyBackoff  = 2 * time.Second
)

// fetchRootKey attests to the broker (Trustee's KBS protocol) and returns
// the root key. The TLS connection trusts only the broker CA from the
// measured config, and the key comes back encrypted to a key made for this
// attestation only.
func fetchRootKey(ctx context.Context, log *slog.Logger, kr *guestconfig.KeyRelease, att *attester) ([]byte, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(kr.CACertPEM)) {
		return nil, errors.New("key_release.ca_cert_pem holds no certificate")
	}
	var last error
	for i := 1; i <= keyAttempts; i++ {
		key, err := kbsclient.GetResource(ctx, kbsclient.Options{URL: kr.URL, RootCAs: pool,
			QuoteProvider: att.qp, Path: kr.Resource, Timeout: 20 * time.Second})
		if err == nil {
			return key, nil
		}
		var ke *kbsclient.Error
		if errors.As(err, &ke) && ke.Status >= 400 && ke.Status < 500 {
			return nil, fmt.Errorf("%w: %v", errNoKey, err)
		}
		last = err
		log.Warn("key broker unreachable; retrying", "attempt", i, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(keyBackoff * time.Duration(i)):
		}
	}
	return nil, last
}
