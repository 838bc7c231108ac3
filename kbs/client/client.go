// Package client is the guest side of Trustee's KBS protocol v0.4.0 for
// AMD SEV-SNP: it attests to a key broker (flare-kbs, or a real Trustee
// KBS) and fetches one resource. flare-init runs it in the guest's initrd,
// so it depends on the standard library and kbs/rcar only and builds with
// CGO_ENABLED=0.
//
// GetResource: POST /kbs/v0/auth → challenge nonce; a fresh RSA-3072 key;
// an SNP report whose REPORT_DATA is SHA-384(JCS{nonce, tee-pubkey,
// additional-evidence: ""}) ‖ 0¹⁶ from the QuoteProvider; POST
// /kbs/v0/attest; GET /kbs/v0/resource/<repo>/<type>/<tag>; the JWE is
// decrypted with the key, which is then dropped.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/flarekit/terraform-provider-flare/kbs/rcar"
)

// QuoteProvider gets a raw SNP quote (the 1184-byte report, then the
// certificate table, if any) for REPORT_DATA. go-sev-guest's
// client.QuoteProvider (client.GetQuoteProvider(): configfs-tsm, else
// /dev/sev-guest) satisfies it; so does internal/attest/simulated's.
type QuoteProvider interface {
	GetRawQuote(reportData [64]byte) ([]uint8, error)
}

// Options of GetResource.
type Options struct {
	// URL is the broker, https://host:port (no path).
	URL string
	// RootCAs is the pinned CA of the broker's TLS certificate (the
	// system roots are never used). Required unless HTTPClient is given.
	RootCAs *x509.CertPool
	// HTTPClient overrides the client built from RootCAs.
	HTTPClient *http.Client
	// QuoteProvider makes the SNP report. Required.
	QuoteProvider QuoteProvider
	// Path is the resource, "repository/type/tag".
	Path string
	// KeyBits of the ephemeral RSA key (0: 3072).
	KeyBits int
	// Timeout of each HTTP request (0: 30s).
	Timeout time.Duration
}

// Error is a broker's refusal: the HTTP status and Trustee's error type
// (the last segment of its "type" URL, e.g. "PolicyDeny").
type Error struct {
	Step   string // auth, attest, resource
	Status int
	Type   string
	Detail string
}

func (e *Error) Error() string {
	return fmt.Sprintf("kbs %s: HTTP %d %s: %s", e.Step, e.Status, e.Type, e.Detail)
}

const maxResponse = 1 << 20

// GetResource attests and returns the resource at o.Path.
func GetResource(ctx context.Context, o Options) ([]byte, error) {
	if o.QuoteProvider == nil {
		return nil, errors.New("kbs client: no QuoteProvider")
	}
	base, err := url.Parse(strings.TrimRight(o.URL, "/"))
	if err != nil || base.Scheme != "https" || base.Host == "" {
		return nil, fmt.Errorf("kbs client: URL %q: want https://host:port", o.URL)
	}
	parts := strings.Split(o.Path, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return nil, fmt.Errorf("kbs client: path %q: want repository/type/tag", o.Path)
	}
	for i := range parts {
		parts[i] = url.PathEscape(parts[i])
	}
	hc := o.HTTPClient
	if hc == nil {
		if o.RootCAs == nil {
			return nil, errors.New("kbs client: no RootCAs: the broker's CA must be pinned")
		}
		hc = &http.Client{Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: o.RootCAs, MinVersion: tls.VersionTLS12},
			Proxy:               nil,
			TLSHandshakeTimeout: 15 * time.Second,
		}}
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.KeyBits == 0 {
		o.KeyBits = 3072
	}
	c := &conn{hc: hc, base: base.String(), timeout: o.Timeout}

	// 1. auth
	var ch rcar.Challenge
	if err := c.do(ctx, "auth", http.MethodPost, "/kbs/v0/auth",
		rcar.Request{Version: rcar.ProtocolVersion, Tee: rcar.TeeSNP, ExtraParams: json.RawMessage(`{}`)}, &ch); err != nil {
		return nil, err
	}
	if ch.Nonce == "" {
		return nil, errors.New("kbs client: the challenge has no nonce")
	}
	if c.cookie == nil {
		return nil, fmt.Errorf("kbs client: auth set no %s cookie", rcar.SessionCookie)
	}

	// 2. ephemeral key and report
	key, err := rsa.GenerateKey(rand.Reader, o.KeyBits)
	if err != nil {
		return nil, fmt.Errorf("kbs client: ephemeral key: %w", err)
	}
	jwk := rcar.RSAPubKey(&key.PublicKey)
	rd, err := rcar.ReportData(ch.Nonce, jwk, "")
	if err != nil {
		return nil, err
	}
	quote, err := o.QuoteProvider.GetRawQuote(rd)
	if err != nil {
		return nil, fmt.Errorf("kbs client: SNP report: %w", err)
	}
	if len(quote) < rcar.ReportSize || !bytes.Equal(quote[0x50:0x90], rd[:]) {
		return nil, errors.New("kbs client: the quote provider returned a report for other REPORT_DATA")
	}
	ev, err := rcar.SNPEvidenceFromQuote(quote)
	if err != nil {
		return nil, fmt.Errorf("kbs client: %w", err)
	}
	evJSON, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}

	// 3. attest
	var tok rcar.AttestationToken
	if err := c.do(ctx, "attest", http.MethodPost, "/kbs/v0/attest", rcar.Attestation{
		RuntimeData: rcar.RuntimeData{Nonce: ch.Nonce, TeePubKey: jwk},
		TeeEvidence: rcar.CompositeEvidence{PrimaryEvidence: evJSON, AdditionalEvidence: ""},
	}, &tok); err != nil {
		return nil, err
	}

	// 4. resource
	var resp rcar.Response
	if err := c.do(ctx, "resource", http.MethodGet, "/kbs/v0/resource/"+strings.Join(parts, "/"), nil, &resp); err != nil {
		return nil, err
	}
	secret, err := rcar.Open(key, &resp)
	if err != nil {
		return nil, fmt.Errorf("kbs client: %w", err)
	}
	return secret, nil
}

type conn struct {
	hc      *http.Client
	base    string
	timeout time.Duration
	cookie  *http.Cookie
}

func (c *conn) do(ctx context.Context, step, method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.cookie != nil {
		req.AddCookie(&http.Cookie{Name: c.cookie.Name, Value: c.cookie.Value})
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("kbs %s: %w", step, err)
	}
	defer resp.Body.Close()
	for _, ck := range resp.Cookies() {
		if ck.Name == rcar.SessionCookie {
			c.cookie = ck
		}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return fmt.Errorf("kbs %s: reading the answer: %w", step, err)
	}
	if len(b) > maxResponse {
		return fmt.Errorf("kbs %s: answer larger than %d bytes", step, maxResponse)
	}
	if resp.StatusCode != http.StatusOK {
		e := &Error{Step: step, Status: resp.StatusCode, Detail: strings.TrimSpace(string(b))}
		var info rcar.ErrorInformation
		if json.Unmarshal(b, &info) == nil && info.Type != "" {
			e.Type = info.Type[strings.LastIndex(info.Type, "/")+1:]
			e.Detail = info.Detail
		}
		return e
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("kbs %s: answer is not the expected JSON: %w", step, err)
	}
	return nil
}
