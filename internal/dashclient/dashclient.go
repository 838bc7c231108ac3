// Package dashclient is a client of NVIDIA FLARE's Dashboard API, as both
// NVFlare's own Dashboard (Flask) and flare-dashboard serve it: log in as a
// project admin, read and patch the project, list users and clients, set
// approval states. The provider's flare_dashboard_* resources use it.
package dashclient

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
	"os"
	"strings"
	"sync"
	"time"
)

// Config says where the Dashboard is and who logs in.
type Config struct {
	// URL is the Dashboard's address (https://host:8443); the API is under
	// /nvflare-dashboard/api/v1 unless URL already ends in /api/v1.
	URL      string
	Email    string
	Password string
	// CACert is a PEM bundle, or the path of one, for the Dashboard's TLS
	// certificate; SkipVerify turns verification off (tests only).
	CACert     string
	SkipVerify bool
	Timeout    time.Duration
}

// Client talks to one Dashboard. It logs in on first use and again when the
// token (30 minutes) has expired. Safe for concurrent use.
type Client struct {
	cfg  Config
	base string
	hc   *http.Client

	mu    sync.Mutex
	token string
}

// New checks cfg and returns a client; it does not connect yet.
func New(cfg Config) (*Client, error) {
	if cfg.URL == "" {
		return nil, errors.New("dashboard url is not set")
	}
	if cfg.Email == "" || cfg.Password == "" {
		return nil, errors.New("dashboard email and password are not set")
	}
	base := strings.TrimRight(cfg.URL, "/")
	if !strings.HasSuffix(base, "/api/v1") {
		base += "/nvflare-dashboard/api/v1"
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.SkipVerify} //nolint:gosec // tests only, documented
	if cfg.CACert != "" {
		pemData := []byte(cfg.CACert)
		if !strings.Contains(cfg.CACert, "-----BEGIN") {
			b, err := os.ReadFile(cfg.CACert)
			if err != nil {
				return nil, fmt.Errorf("dashboard ca_cert: %w", err)
			}
			pemData = b
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, errors.New("dashboard ca_cert holds no PEM certificate")
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	return &Client{cfg: cfg, base: base, hc: &http.Client{Transport: tr, Timeout: timeout}}, nil
}

// Error is an answer other than the one expected.
type Error struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *Error) Error() string {
	return fmt.Sprintf("dashboard %s %s: HTTP %d: %s", e.Method, e.Path, e.Status, strings.TrimSpace(e.Body))
}

// do sends one request; want is the expected status. The answer's JSON is
// decoded into out; a JSON "status" other than "ok" is an error too.
func (c *Client) do(ctx context.Context, method, path string, body any, auth bool, want int, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	for attempt := 0; ; attempt++ {
		if rd != nil {
			rd.(*bytes.Reader).Seek(0, io.SeekStart)
		}
		req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
		if err != nil {
			return err
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if auth {
			tok, err := c.login(ctx, attempt > 0)
			if err != nil {
				return err
			}
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			return fmt.Errorf("dashboard %s %s: %w", method, path, err)
		}
		raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		resp.Body.Close()
		if err != nil {
			return err
		}
		// An expired token: log in once more.
		if auth && attempt == 0 && (resp.StatusCode == 401 || resp.StatusCode == 422) {
			continue
		}
		if resp.StatusCode != want {
			return &Error{method, path, resp.StatusCode, string(raw)}
		}
		var st struct {
			Status string `json:"status"`
		}
		if json.Unmarshal(raw, &st) != nil || st.Status != "ok" {
			return &Error{method, path, resp.StatusCode, string(raw)}
		}
		if out != nil {
			return json.Unmarshal(raw, out)
		}
		return nil
	}
}

func (c *Client) login(ctx context.Context, fresh bool) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && !fresh {
		return c.token, nil
	}
	var out struct {
		AccessToken string `json:"access_token"`
		User        struct {
			Role string `json:"role"`
		} `json:"user"`
	}
	if err := c.do(ctx, "POST", "/login", map[string]string{"email": c.cfg.Email, "password": c.cfg.Password}, false, 200, &out); err != nil {
		var e *Error
		if errors.As(err, &e) && e.Status == 401 {
			return "", fmt.Errorf("dashboard login as %s refused: wrong email or password", c.cfg.Email)
		}
		return "", fmt.Errorf("dashboard login: %w", err)
	}
	if out.User.Role != "project_admin" {
		return "", fmt.Errorf("dashboard user %s is %q, not project_admin: Terraform manages the Dashboard as its project admin", c.cfg.Email, out.User.Role)
	}
	c.token = out.AccessToken
	return c.token, nil
}

// Project is the Dashboard's project (GET /project).
type Project struct {
	Title        string         `json:"title"`
	Description  string         `json:"description"`
	ShortName    string         `json:"short_name"`
	AppLocation  string         `json:"app_location"`
	StartingDate string         `json:"starting_date"`
	EndDate      string         `json:"end_date"`
	Server1      string         `json:"server1"`
	Frozen       bool           `json:"frozen"`
	Public       bool           `json:"public"`
	ProjectProps map[string]any `json:"project_props,omitempty"`
	ServerProps  map[string]any `json:"server_props,omitempty"`
	NumClients   int64          `json:"num_clients"`
	NumOrgs      int64          `json:"num_orgs"`
	NumUsers     int64          `json:"num_users"`
}

// GetProject reads the project (no login needed, as in NVFlare).
func (c *Client) GetProject(ctx context.Context) (*Project, error) {
	var out struct {
		Project Project `json:"project"`
	}
	if err := c.do(ctx, "GET", "/project", nil, false, 200, &out); err != nil {
		return nil, err
	}
	return &out.Project, nil
}

// PatchProject writes fields (JSON names) of the project. NVFlare answers a
// patch of a frozen project with 200 {"status":"Project is frozen"}: that
// is an error here.
func (c *Client) PatchProject(ctx context.Context, fields map[string]any) (*Project, error) {
	var out struct {
		Project Project `json:"project"`
	}
	if err := c.do(ctx, "PATCH", "/project", fields, true, 200, &out); err != nil {
		return nil, err
	}
	return &out.Project, nil
}

// User is a registered user.
type User struct {
	ID            int64  `json:"id"`
	Email         string `json:"email"`
	Name          string `json:"name"`
	Organization  string `json:"organization"`
	Role          string `json:"role"`
	Description   string `json:"description"`
	ApprovalState int64  `json:"approval_state"`
	DownloadCount int64  `json:"download_count"`
}

// Capacity is a client's declared resources.
type Capacity struct {
	NumOfGPUs     float64 `json:"num_of_gpus"`
	MemPerGPUInGB float64 `json:"mem_per_gpu_in_GiB"`
}

// Client is a registered site (a Dashboard "client").
type ClientSite struct {
	ID            int64     `json:"id"`
	Name          string    `json:"name"`
	Organization  string    `json:"organization"`
	Description   string    `json:"description"`
	ApprovalState int64     `json:"approval_state"`
	DownloadCount int64     `json:"download_count"`
	Capacity      *Capacity `json:"capacity,omitempty"`
}

// Users lists every user (the project admin sees all).
func (c *Client) Users(ctx context.Context) ([]User, error) {
	var out struct {
		UserList []User `json:"user_list"`
	}
	err := c.do(ctx, "GET", "/users", nil, true, 200, &out)
	return out.UserList, err
}

// Clients lists every client.
func (c *Client) Clients(ctx context.Context) ([]ClientSite, error) {
	var out struct {
		ClientList []ClientSite `json:"client_list"`
	}
	err := c.do(ctx, "GET", "/clients", nil, true, 200, &out)
	return out.ClientList, err
}

// ErrNotFound: no user or client of that name.
var ErrNotFound = errors.New("not registered on the dashboard")

// UserByEmail finds a user.
func (c *Client) UserByEmail(ctx context.Context, email string) (*User, error) {
	us, err := c.Users(ctx)
	if err != nil {
		return nil, err
	}
	for i := range us {
		if us[i].Email == email {
			return &us[i], nil
		}
	}
	return nil, fmt.Errorf("user %s: %w", email, ErrNotFound)
}

// ClientByName finds a client.
func (c *Client) ClientByName(ctx context.Context, name string) (*ClientSite, error) {
	cs, err := c.Clients(ctx)
	if err != nil {
		return nil, err
	}
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i], nil
		}
	}
	return nil, fmt.Errorf("client %s: %w", name, ErrNotFound)
}

// SetUserApproval sets a user's approval_state (100 approved, 0 pending,
// negative refused).
func (c *Client) SetUserApproval(ctx context.Context, id, state int64) (*User, error) {
	var out struct {
		User User `json:"user"`
	}
	err := c.do(ctx, "PATCH", fmt.Sprintf("/users/%d", id), map[string]any{"approval_state": state}, true, 200, &out)
	return &out.User, err
}

// SetClientApproval sets a client's approval_state.
func (c *Client) SetClientApproval(ctx context.Context, id, state int64) (*ClientSite, error) {
	var out struct {
		Client ClientSite `json:"client"`
	}
	err := c.do(ctx, "PATCH", fmt.Sprintf("/clients/%d", id), map[string]any{"approval_state": state}, true, 200, &out)
	return &out.Client, err
}
