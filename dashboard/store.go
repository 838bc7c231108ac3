// Package dashboard is an API-compatible implementation of NVIDIA FLARE's
// Dashboard backend (nvflare/dashboard, the Flask app in the nvflare wheel):
// the same routes, status codes and JSON shapes, with SQLite storage through a
// pure-Go driver, argon2id password hashes and a JWT key that survives
// restarts.
package dashboard

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// migrations are applied in order; their index+1 is the schema version kept
// in schema_migrations. Append only: never edit a released migration.
var migrations = []string{
	// 1: NVFlare's tables (models.py), roles and organizations kept as names.
	`CREATE TABLE project (
		id INTEGER PRIMARY KEY,
		frozen INTEGER NOT NULL DEFAULT 0,
		public INTEGER NOT NULL DEFAULT 0,
		cc_mode INTEGER NOT NULL DEFAULT 0,
		short_name TEXT NOT NULL DEFAULT '',
		title TEXT NOT NULL DEFAULT '',
		description TEXT NOT NULL DEFAULT '',
		app_location TEXT NOT NULL DEFAULT '',
		starting_date TEXT NOT NULL DEFAULT '',
		end_date TEXT NOT NULL DEFAULT '',
		server1 TEXT NOT NULL DEFAULT '',
		project_props TEXT NOT NULL DEFAULT '',
		server_props TEXT NOT NULL DEFAULT '',
		root_cert TEXT NOT NULL DEFAULT '',
		root_key TEXT NOT NULL DEFAULT ''
	);
	CREATE TABLE organization (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		name TEXT NOT NULL UNIQUE
	);
	CREATE TABLE user (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		email TEXT NOT NULL UNIQUE,
		name TEXT NOT NULL DEFAULT '',
		description TEXT NOT NULL DEFAULT '',
		password_hash TEXT NOT NULL,
		role TEXT NOT NULL DEFAULT '',
		organization TEXT NOT NULL DEFAULT '',
		approval_state INTEGER NOT NULL DEFAULT 0,
		download_count INTEGER NOT NULL DEFAULT 0,
		created_at TEXT NOT NULL,
		updated_at TEXT NOT NULL
	);
	CREATE TABLE client (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		name TEXT NOT NULL UNIQUE,
		description TEXT NOT NULL DEFAULT '',
		organization TEXT NOT NULL DEFAULT '',
		creator_id INTEGER NOT NULL REFERENCES user(id) ON DELETE CASCADE,
		approval_state INTEGER NOT NULL DEFAULT 0,
		download_count INTEGER NOT NULL DEFAULT 0,
		capacity TEXT NOT NULL DEFAULT '',
		props TEXT NOT NULL DEFAULT '',
		created_at TEXT NOT NULL,
		updated_at TEXT NOT NULL
	);`,
	// 2: the audit log (not in NVFlare): approvals, role changes, freezing,
	// deletions and kit downloads, who did them and when.
	`CREATE TABLE audit (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		at TEXT NOT NULL,
		actor TEXT NOT NULL,
		action TEXT NOT NULL,
		target TEXT NOT NULL,
		detail TEXT NOT NULL DEFAULT ''
	);`,
	// 3: settings every replica on one database shares: the JWT key when
	// the database is PostgreSQL (SQLite keeps jwt.key in the folder).
	`CREATE TABLE setting (
		name TEXT PRIMARY KEY,
		value TEXT NOT NULL
	);`,
	// 4: sites registered with a certificate request (not in NVFlare): the
	// request zip `nvflare cert request` made (CSR and site.yaml; the
	// site keeps its private key) and, once issued, the certificate that
	// every signed zip of the site carries.
	`CREATE TABLE client_request (
		client_id INTEGER PRIMARY KEY REFERENCES client(id) ON DELETE CASCADE,
		request_zip TEXT NOT NULL,
		request_id TEXT NOT NULL,
		public_key_sha256 TEXT NOT NULL,
		cert TEXT NOT NULL DEFAULT '',
		created_at TEXT NOT NULL
	);`,
}

// ErrConflict is a unique-constraint violation (duplicate email or name).
var ErrConflict = errors.New("conflicting")

// ErrNotFound is a missing row.
var ErrNotFound = errors.New("not found")

// Store is the Dashboard's database.
type Store struct {
	db *dbx
}

// OpenStore opens (creating if needed) dir/db.sqlite and migrates it.
func OpenStore(dir string) (*Store, error) { return OpenStoreURL(dir, "") }

// OpenStoreURL opens the database that databaseURL names (dialect.go):
// "" is dir/db.sqlite; postgres:// or postgresql:// is PostgreSQL;
// sqlite:///path is that SQLite file (NVFlare's DATABASE_URL form). It
// migrates the database to this binary's schema.
func OpenStoreURL(dir, databaseURL string) (*Store, error) {
	db, err := openDB(dir, databaseURL)
	if err != nil {
		return nil, err
	}
	s := &Store{db: db}
	if err := s.migrate(context.Background()); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// SchemaVersion is the number of migrations applied.
func (s *Store) SchemaVersion() (int, error) {
	var v int
	err := s.db.QueryRow(`SELECT COALESCE(MAX(version),0) FROM schema_migrations`).Scan(&v)
	return v, err
}

func (s *Store) migrate(ctx context.Context) error {
	// One migrator at a time: replicas on one PostgreSQL start together.
	unlock, err := s.db.lockMigrations(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)`); err != nil {
		return err
	}
	cur, err := s.SchemaVersion()
	if err != nil {
		return err
	}
	if cur > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this binary's %d", cur, len(migrations))
	}
	for v := cur + 1; v <= len(migrations); v++ {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.db.dialect.migration(migrations[v-1])); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", v, err)
		}
		if _, err := tx.ExecContext(ctx, s.db.rebind(`INSERT INTO schema_migrations(version, applied_at) VALUES (?, ?)`), v, now()); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// now is the timestamp format Flask's jsonify gives datetimes (RFC 1123, GMT).
func now() string { return time.Now().UTC().Format(http.TimeFormat) }

// isUnique: a unique-constraint violation, in SQLite's or PostgreSQL's words.
func isUnique(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "UNIQUE constraint failed") ||
		strings.Contains(err.Error(), "SQLSTATE 23505"))
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// User is a row of the user table.
type User struct {
	ID            int64
	Email         string
	Name          string
	Description   string
	PasswordHash  string
	Role          string
	Organization  string
	ApprovalState int64
	DownloadCount int64
	CreatedAt     string
	UpdatedAt     string
}

// JSON is the user as NVFlare's User.asdict() shows it.
func (u *User) JSON() map[string]any {
	if u == nil {
		return map[string]any{}
	}
	return map[string]any{
		"id": u.ID, "email": u.Email, "name": u.Name, "description": u.Description,
		"role": u.Role, "organization": u.Organization,
		"approval_state": u.ApprovalState, "download_count": u.DownloadCount,
		"created_at": u.CreatedAt, "updated_at": u.UpdatedAt,
	}
}

// Client is a row of the client table.
type Client struct {
	ID            int64
	Name          string
	Description   string
	Organization  string
	CreatorID     int64
	ApprovalState int64
	DownloadCount int64
	Capacity      string // JSON or ""
	Props         string // JSON or ""
	CreatedAt     string
	UpdatedAt     string
}

// JSON is the client as NVFlare's Client.asdict() shows it: capacity and
// props only when set, no creator_id.
func (c *Client) JSON() map[string]any {
	if c == nil {
		return map[string]any{}
	}
	m := map[string]any{
		"id": c.ID, "name": c.Name, "description": c.Description, "organization": c.Organization,
		"approval_state": c.ApprovalState, "download_count": c.DownloadCount,
		"created_at": c.CreatedAt, "updated_at": c.UpdatedAt,
	}
	addJSON(m, "capacity", c.Capacity)
	addJSON(m, "props", c.Props)
	return m
}

func addJSON(m map[string]any, key, raw string) {
	if raw == "" {
		return
	}
	var v any
	if json.Unmarshal([]byte(raw), &v) == nil {
		m[key] = v
	}
}

// Project is the single project row.
type Project struct {
	Frozen, Public, CCMode             bool
	ShortName, Title, Description      string
	AppLocation, StartingDate, EndDate string
	Server1, ProjectProps, ServerProps string
	RootCert, RootKey                  string
	NumClients, NumOrgs, NumUsers      int64
}

// JSON is Project.asdict() plus Store._add_registered_info.
func (p *Project) JSON() map[string]any {
	m := map[string]any{
		"frozen": p.Frozen, "public": p.Public, "cc_mode": p.CCMode,
		"short_name": p.ShortName, "title": p.Title, "description": p.Description,
		"app_location": p.AppLocation, "starting_date": p.StartingDate, "end_date": p.EndDate,
		"server1":     p.Server1,
		"num_clients": p.NumClients, "num_orgs": p.NumOrgs, "num_users": p.NumUsers,
	}
	addJSON(m, "project_props", p.ProjectProps)
	addJSON(m, "server_props", p.ServerProps)
	return m
}

const userCols = `id, email, name, description, password_hash, role, organization, approval_state, download_count, created_at, updated_at`
const clientCols = `id, name, description, organization, creator_id, approval_state, download_count, capacity, props, created_at, updated_at`

type scanner interface{ Scan(...any) error }

func scanUser(r scanner) (*User, error) {
	u := &User{}
	err := r.Scan(&u.ID, &u.Email, &u.Name, &u.Description, &u.PasswordHash, &u.Role, &u.Organization,
		&u.ApprovalState, &u.DownloadCount, &u.CreatedAt, &u.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return u, err
}

func scanClient(r scanner) (*Client, error) {
	c := &Client{}
	err := r.Scan(&c.ID, &c.Name, &c.Description, &c.Organization, &c.CreatorID, &c.ApprovalState,
		&c.DownloadCount, &c.Capacity, &c.Props, &c.CreatedAt, &c.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return c, err
}

// ensureOrg is NVFlare's get_or_create(Organization, name=...).
func (s *Store) ensureOrg(name string) error {
	_, err := s.db.Exec(`INSERT INTO organization(name) VALUES (?) ON CONFLICT DO NOTHING`, name)
	return err
}

// CreateUser inserts a user; ErrConflict for a taken email.
func (s *Store) CreateUser(u *User) (*User, error) {
	if err := s.ensureOrg(u.Organization); err != nil {
		return nil, err
	}
	t := now()
	var id int64
	err := s.db.QueryRow(`INSERT INTO "user"(email, name, description, password_hash, role, organization, approval_state, created_at, updated_at)
		VALUES (?,?,?,?,?,?,?,?,?) RETURNING id`, u.Email, u.Name, u.Description, u.PasswordHash, u.Role, u.Organization, u.ApprovalState, t, t).Scan(&id)
	if isUnique(err) {
		return nil, ErrConflict
	}
	if err != nil {
		return nil, err
	}
	return s.User(id)
}

// User reads a user by id.
func (s *Store) User(id int64) (*User, error) {
	return scanUser(s.db.QueryRow(`SELECT `+userCols+` FROM "user" WHERE id = ?`, id))
}

// UserByEmail reads a user by email.
func (s *Store) UserByEmail(email string) (*User, error) {
	return scanUser(s.db.QueryRow(`SELECT `+userCols+` FROM "user" WHERE email = ?`, email))
}

// Users lists users, all or of one organization, by id.
func (s *Store) Users(org *string) ([]*User, error) {
	q, args := `SELECT `+userCols+` FROM "user" ORDER BY id`, []any{}
	if org != nil {
		q, args = `SELECT `+userCols+` FROM "user" WHERE organization = ? ORDER BY id`, []any{*org}
	}
	rows, err := s.db.Query(q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// UpdateUser writes every mutable field of u.
func (s *Store) UpdateUser(u *User) error {
	if err := s.ensureOrg(u.Organization); err != nil {
		return err
	}
	_, err := s.db.Exec(`UPDATE "user" SET name=?, description=?, password_hash=?, role=?, organization=?, approval_state=?, download_count=?, updated_at=? WHERE id=?`,
		u.Name, u.Description, u.PasswordHash, u.Role, u.Organization, u.ApprovalState, u.DownloadCount, now(), u.ID)
	return err
}

// DeleteUser deletes a user and the clients it created.
func (s *Store) DeleteUser(id int64) error {
	if _, err := s.db.Exec(`DELETE FROM client WHERE creator_id = ?`, id); err != nil {
		return err
	}
	_, err := s.db.Exec(`DELETE FROM "user" WHERE id = ?`, id)
	return err
}

// CreateClient inserts a client; ErrConflict for a taken name.
func (s *Store) CreateClient(c *Client) (*Client, error) {
	if err := s.ensureOrg(c.Organization); err != nil {
		return nil, err
	}
	t := now()
	var id int64
	err := s.db.QueryRow(`INSERT INTO client(name, description, organization, creator_id, capacity, props, created_at, updated_at)
		VALUES (?,?,?,?,?,?,?,?) RETURNING id`, c.Name, c.Description, c.Organization, c.CreatorID, c.Capacity, c.Props, t, t).Scan(&id)
	if isUnique(err) {
		return nil, ErrConflict
	}
	if err != nil {
		return nil, err
	}
	return s.Client(id)
}

// Client reads a client by id.
func (s *Store) Client(id int64) (*Client, error) {
	return scanClient(s.db.QueryRow(`SELECT `+clientCols+` FROM client WHERE id = ?`, id))
}

// Clients lists every client by id.
func (s *Store) Clients() ([]*Client, error) {
	rows, err := s.db.Query(`SELECT ` + clientCols + ` FROM client ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Client
	for rows.Next() {
		c, err := scanClient(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// UpdateClient writes every mutable field of c; ErrConflict for a taken name.
func (s *Store) UpdateClient(c *Client) error {
	if err := s.ensureOrg(c.Organization); err != nil {
		return err
	}
	_, err := s.db.Exec(`UPDATE client SET name=?, description=?, organization=?, approval_state=?, download_count=?, capacity=?, props=?, updated_at=? WHERE id=?`,
		c.Name, c.Description, c.Organization, c.ApprovalState, c.DownloadCount, c.Capacity, c.Props, now(), c.ID)
	if isUnique(err) {
		return ErrConflict
	}
	return err
}

// DeleteClient deletes a client.
func (s *Store) DeleteClient(id int64) error {
	_, err := s.db.Exec(`DELETE FROM client WHERE id = ?`, id)
	return err
}

// Organizations lists organization names by id.
func (s *Store) Organizations() ([]string, error) {
	rows, err := s.db.Query(`SELECT name FROM organization ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// EnsureProject creates the project row if missing.
func (s *Store) EnsureProject() error {
	_, err := s.db.Exec(`INSERT INTO project(id) VALUES (1) ON CONFLICT DO NOTHING`)
	return err
}

// Project reads the project with the registration counts.
func (s *Store) Project() (*Project, error) {
	p := &Project{}
	err := s.db.QueryRow(`SELECT frozen, public, cc_mode, short_name, title, description, app_location, starting_date, end_date,
		server1, project_props, server_props, root_cert, root_key,
		(SELECT COUNT(*) FROM client), (SELECT COUNT(*) FROM organization), (SELECT COUNT(*) FROM "user")
		FROM project WHERE id = 1`).Scan(&p.Frozen, &p.Public, &p.CCMode, &p.ShortName, &p.Title, &p.Description,
		&p.AppLocation, &p.StartingDate, &p.EndDate, &p.Server1, &p.ProjectProps, &p.ServerProps, &p.RootCert, &p.RootKey,
		&p.NumClients, &p.NumOrgs, &p.NumUsers)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return p, err
}

// UpdateProject writes every field of p.
func (s *Store) UpdateProject(p *Project) error {
	_, err := s.db.Exec(`UPDATE project SET frozen=?, public=?, cc_mode=?, short_name=?, title=?, description=?, app_location=?,
		starting_date=?, end_date=?, server1=?, project_props=?, server_props=?, root_cert=?, root_key=? WHERE id = 1`,
		b2i(p.Frozen), b2i(p.Public), b2i(p.CCMode), p.ShortName, p.Title, p.Description, p.AppLocation, p.StartingDate, p.EndDate,
		p.Server1, p.ProjectProps, p.ServerProps, p.RootCert, p.RootKey)
	return err
}

// AuditEntry is one row of the audit log.
type AuditEntry struct {
	At, Actor, Action, Target, Detail string
}

// Audit appends to the audit log.
func (s *Store) Audit(actor, action, target, detail string) error {
	_, err := s.db.Exec(`INSERT INTO audit(at, actor, action, target, detail) VALUES (?,?,?,?,?)`,
		time.Now().UTC().Format(time.RFC3339Nano), actor, action, target, detail)
	return err
}

// AuditLog lists the audit log, oldest first.
func (s *Store) AuditLog() ([]AuditEntry, error) {
	rows, err := s.db.Query(`SELECT at, actor, action, target, detail FROM audit ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var e AuditEntry
		if err := rows.Scan(&e.At, &e.Actor, &e.Action, &e.Target, &e.Detail); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// CountClientDownload adds one to a client's download_count.
func (s *Store) CountClientDownload(id int64) error {
	_, err := s.db.Exec(`UPDATE client SET download_count = download_count + 1, updated_at = ? WHERE id = ?`, now(), id)
	return err
}

// CountUserDownload adds one to a user's download_count.
func (s *Store) CountUserDownload(id int64) error {
	_, err := s.db.Exec(`UPDATE "user" SET download_count = download_count + 1, updated_at = ? WHERE id = ?`, now(), id)
	return err
}
