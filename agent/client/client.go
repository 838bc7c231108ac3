// Package client is the Go client of flare-agent's mTLS HTTP API.
//
//	c, err := client.FromKit("https://site-1.example:8443", "/path/to/admin@org/")
//	cvm, err := c.Launch(ctx, "/srv/kits/site-1/cvm_1a2b3c4d")
//	err = c.WaitReady(ctx, cvm.ID)
//	v, err := c.Attest(ctx, cvm.ID, nonce)
//
// Errors from the server are *Error values carrying the HTTP status and the
// server's message.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/internal/agentid"
)

// Client talks to one flare-agent.
type Client struct {
	base string
	http *http.Client
}

// New returns a client for baseURL (https://host:port) using tlsConfig
// (client certificate and the CA that signed the agent's certificate).
func New(baseURL string, tlsConfig *tls.Config) *Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConfig.Clone() // the transport adds ALPN protocols to it
	tr.Proxy = nil                         // the agent is reached directly, never through a proxy
	return &Client{base: strings.TrimRight(baseURL, "/"), http: &http.Client{Transport: tr}}
}

// NewWithHTTPClient returns a client that uses hc as is (tests, plain HTTP).
func NewWithHTTPClient(baseURL string, hc *http.Client) *Client {
	return &Client{base: strings.TrimRight(baseURL, "/"), http: hc}
}

// TLSConfigFromKit loads a startup kit's identity: startup/client.crt and
// client.key (admins, clients) or, when absent, startup/server.crt and
// server.key (servers), and startup/rootCA.pem as the only trusted CA.
// kitDir is the kit folder (holding startup/) or its startup folder.
func TLSConfigFromKit(kitDir string) (*tls.Config, error) {
	startup := filepath.Join(kitDir, "startup")
	if _, err := os.Stat(filepath.Join(startup, "rootCA.pem")); err != nil {
		if _, err2 := os.Stat(filepath.Join(kitDir, "rootCA.pem")); err2 == nil {
			startup = kitDir
		} else {
			return nil, fmt.Errorf("startup kit %s: no startup/rootCA.pem", kitDir)
		}
	}
	ca, err := os.ReadFile(filepath.Join(startup, "rootCA.pem"))
	if err != nil {
		return nil, fmt.Errorf("startup kit: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("startup kit: %s holds no PEM certificate", filepath.Join(startup, "rootCA.pem"))
	}
	var cert tls.Certificate
	var loadErr error
	for _, base := range []string{"client", "server"} {
		cert, loadErr = tls.LoadX509KeyPair(filepath.Join(startup, base+".crt"), filepath.Join(startup, base+".key"))
		if loadErr == nil {
			break
		}
	}
	if loadErr != nil {
		return nil, fmt.Errorf("startup kit %s: no usable client.crt/client.key or server.crt/server.key: %w", kitDir, loadErr)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		RootCAs:      pool,
		Certificates: []tls.Certificate{cert},
		// NVFlare certificates name participants, not host names: a site's
		// agent at 127.0.0.1 presents "site-1". Verify the chain to the
		// project root and leave the name to VerifyConnection below.
		InsecureSkipVerify: true, //nolint:gosec // chain verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyChain(cs, pool)
		},
	}, nil
}

// verifyChain checks the server's certificate chains to the project root.
func verifyChain(cs tls.ConnectionState, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("agent presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("agent certificate %q is not from this project's CA: %w", cs.PeerCertificates[0].Subject.CommonName, err)
	}
	return nil
}

// PinSite makes cfg (from TLSConfigFromKit) also require that the agent's
// certificate is the agent certificate of site (flare_agent_identity: CN
// "<site>:flare-agent", role flare-agent), so neither another site's agent
// nor any participant certificate of the project (site's own included) can
// stand in for the agent.
func PinSite(cfg *tls.Config, site string) *tls.Config {
	c := cfg.Clone()
	prev := c.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		if len(cs.PeerCertificates) == 0 {
			return errors.New("agent presented no certificate")
		}
		leaf := cs.PeerCertificates[0]
		got, ok := agentid.SiteOf(leaf)
		if !ok {
			return fmt.Errorf("agent certificate %q is not a flare-agent certificate (a participant's?): the agent of site %q must serve with its agent kit (flare_agent_identity)",
				leaf.Subject.CommonName, site)
		}
		if got != site {
			return fmt.Errorf("agent certificate is for the agent of %q, not the agent of site %q", got, site)
		}
		return nil
	}
	return c
}

// FromKit returns a client that authenticates with the startup kit at
// kitDir (see TLSConfigFromKit).
func FromKit(baseURL, kitDir string) (*Client, error) {
	cfg, err := TLSConfigFromKit(kitDir)
	if err != nil {
		return nil, err
	}
	return New(baseURL, cfg), nil
}

// Error is a non-2xx answer of the agent.
type Error struct {
	StatusCode int    // HTTP status
	Message    string // the server's message
	Method     string
	Path       string
}

func (e *Error) Error() string {
	return fmt.Sprintf("flare-agent %s %s: %d %s: %s", e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// StatusCode returns the HTTP status of an *Error in err's chain, or 0.
func StatusCode(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.StatusCode
	}
	return 0
}

// IsNotFound reports whether err is a 404 from the agent.
func IsNotFound(err error) bool { return StatusCode(err) == http.StatusNotFound }

func (c *Client) do(ctx context.Context, method, path, contentType string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("flare-agent %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("flare-agent %s %s: reading answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		e := &Error{StatusCode: resp.StatusCode, Method: method, Path: path}
		var ae api.Error
		if json.Unmarshal(data, &ae) == nil && ae.Error != "" {
			e.Message = ae.Error
		} else {
			e.Message = strings.TrimSpace(string(data))
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("flare-agent %s %s: bad JSON answer: %w", method, path, err)
	}
	return nil
}

func (c *Client) doJSON(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	return c.do(ctx, method, path, ct, body, out)
}

// Health is GET /healthz.
func (c *Client) Health(ctx context.Context) (*api.Health, error) {
	var h api.Health
	return &h, c.doJSON(ctx, http.MethodGet, "/healthz", nil, &h)
}

// List returns every CVM the agent knows, running or not.
func (c *Client) List(ctx context.Context) ([]api.CVM, error) {
	var l api.CVMList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/cvms", nil, &l); err != nil {
		return nil, err
	}
	return l.CVMs, nil
}

// Get returns one CVM; a missing one is an *Error with status 404.
func (c *Client) Get(ctx context.Context, id string) (*api.CVM, error) {
	var v api.CVM
	return &v, c.doJSON(ctx, http.MethodGet, "/v1/cvms/"+url.PathEscape(id), nil, &v)
}

// Launch starts the CVM kit at kitDir, a folder on the agent's host.
func (c *Client) Launch(ctx context.Context, kitDir string) (*api.CVM, error) {
	var v api.CVM
	return &v, c.doJSON(ctx, http.MethodPost, "/v1/cvms", api.LaunchRequest{KitDir: kitDir}, &v)
}

// Upload sends a CVM kit archive (the <participant>.tgz flare_cvm_kit
// writes) and launches it.
func (c *Client) Upload(ctx context.Context, tgz io.Reader) (*api.CVM, error) {
	var v api.CVM
	return &v, c.do(ctx, http.MethodPost, "/v1/cvms/upload", "application/gzip", tgz, &v)
}

// Stop stops a CVM (ACPI power-down, then quit, then kill) and returns its
// final status.
func (c *Client) Stop(ctx context.Context, id string) (*api.CVM, error) {
	var v api.CVM
	return &v, c.doJSON(ctx, http.MethodDelete, "/v1/cvms/"+url.PathEscape(id), nil, &v)
}

// Attest asks the CVM's guest for a report bound to nonce and returns the
// agent's verdict. A report that fails a check is not an error: the verdict
// has Verified false and Reasons. Errors are transport problems, an unknown
// CVM (404) or a guest that does not answer (503).
func (c *Client) Attest(ctx context.Context, id string, nonce []byte) (*api.Verdict, error) {
	var v api.Verdict
	return &v, c.doJSON(ctx, http.MethodPost, "/v1/cvms/"+url.PathEscape(id)+"/attestation", api.AttestRequest{Nonce: nonce}, &v)
}

// Logs returns the last tail lines of the CVM's serial console (tail <= 0:
// the server's default).
func (c *Client) Logs(ctx context.Context, id string, tail int) (*api.Logs, error) {
	p := "/v1/cvms/" + url.PathEscape(id) + "/logs"
	if tail > 0 {
		p += "?tail=" + strconv.Itoa(tail)
	}
	var l api.Logs
	return &l, c.doJSON(ctx, http.MethodGet, p, nil, &l)
}

// WaitReady polls the CVM until its guest's attestation responder is up
// (GuestReady) and returns its status. It fails when the CVM ends in a
// non-active state or ctx ends.
func (c *Client) WaitReady(ctx context.Context, id string) (*api.CVM, error) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		v, err := c.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if v.GuestReady && v.State == api.StateRunning {
			return v, nil
		}
		if !api.Active(v.State) {
			msg := v.LastError
			if msg == "" {
				msg = "no error recorded"
			}
			return v, fmt.Errorf("CVM %s is %s: %s", id, v.State, msg)
		}
		select {
		case <-ctx.Done():
			return v, fmt.Errorf("CVM %s: guest responder not ready (state %s): %w", id, v.State, ctx.Err())
		case <-tick.C:
		}
	}
}
