package dashboard

// The database dialects, in one place: which driver, placeholders, the
// migrations' SQL, the migration lock and where the JWT key lives. The
// queries in store.go are written once, in the SQL both dialects accept
// (quoted "user", ON CONFLICT DO NOTHING, RETURNING id), with ? for
// parameters; rebind turns those into PostgreSQL's $1, $2, ...

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	_ "github.com/glebarez/go-sqlite"  // pure-Go SQLite driver "sqlite" (no cgo)
	_ "github.com/jackc/pgx/v5/stdlib" // pure-Go PostgreSQL driver "pgx"
)

type dialect int

const (
	sqliteDialect dialect = iota
	postgresDialect
)

func (d dialect) String() string {
	if d == postgresDialect {
		return "postgres"
	}
	return "sqlite"
}

// migration is a migration's SQL for this dialect. The migrations are
// written for SQLite (the first dialect, whose released text must not
// change); PostgreSQL needs its serial ids and "user" quoted (a reserved
// word there).
func (d dialect) migration(sqlText string) string {
	if d != postgresDialect {
		return sqlText
	}
	r := strings.NewReplacer(
		"INTEGER PRIMARY KEY AUTOINCREMENT", "SERIAL PRIMARY KEY",
		"CREATE TABLE user (", `CREATE TABLE "user" (`,
		"REFERENCES user(id)", `REFERENCES "user"(id)`,
	)
	return r.Replace(sqlText)
}

// dbx is the database with its dialect; Exec, Query and QueryRow take ?
// placeholders in either dialect.
type dbx struct {
	*sql.DB
	dialect dialect
}

func (x *dbx) rebind(q string) string {
	if x.dialect != postgresDialect || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (x *dbx) Exec(q string, args ...any) (sql.Result, error) { return x.DB.Exec(x.rebind(q), args...) }
func (x *dbx) Query(q string, args ...any) (*sql.Rows, error) {
	return x.DB.Query(x.rebind(q), args...)
}
func (x *dbx) QueryRow(q string, args ...any) *sql.Row { return x.DB.QueryRow(x.rebind(q), args...) }

// migrationLockID is the PostgreSQL advisory lock replicas take while
// migrating ("flaredsh").
const migrationLockID = 0x666c617265647368

// lockMigrations serialises migrations between replicas (PostgreSQL); SQLite
// has one process per file and one connection.
func (x *dbx) lockMigrations(ctx context.Context) (func(), error) {
	if x.dialect != postgresDialect {
		return func() {}, nil
	}
	conn, err := x.Conn(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, int64(migrationLockID)); err != nil {
		conn.Close()
		return nil, err
	}
	return func() {
		_, _ = conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1)`, int64(migrationLockID))
		conn.Close()
	}, nil
}

// openDB opens the database databaseURL names (see OpenStoreURL).
func openDB(dir, databaseURL string) (*dbx, error) {
	switch {
	case strings.HasPrefix(databaseURL, "postgres://"), strings.HasPrefix(databaseURL, "postgresql://"):
		db, err := sql.Open("pgx", databaseURL)
		if err != nil {
			return nil, err
		}
		db.SetMaxOpenConns(16)
		if err := db.PingContext(context.Background()); err != nil {
			db.Close()
			return nil, fmt.Errorf("PostgreSQL: %w", err)
		}
		return &dbx{db, postgresDialect}, nil
	case databaseURL == "":
		return openSQLite(filepath.Join(dir, "db.sqlite"))
	case strings.HasPrefix(databaseURL, "sqlite:///"):
		return openSQLite("/" + strings.TrimPrefix(databaseURL, "sqlite:///"))
	default:
		return nil, errors.New("DATABASE_URL must be postgres://..., postgresql://... or sqlite:///path")
	}
}

func openSQLite(path string) (*dbx, error) {
	// 0600 before SQLite opens it (its -wal and -shm files take the same
	// mode): the database holds password hashes and, later, the root CA.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	f.Close()
	dsn := "file:" + path +
		"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	// One connection: SQLite serialises writers anyway, and this keeps
	// read-modify-write handlers free of SQLITE_BUSY.
	db.SetMaxOpenConns(1)
	return &dbx{db, sqliteDialect}, nil
}

// Dialect names the store's database: "sqlite" or "postgres".
func (s *Store) Dialect() string { return s.db.dialect.String() }

// jwtKey returns the JWT signing key: with SQLite the folder's jwt.key (so
// tokens survive restarts); with PostgreSQL the one in the setting table,
// made by whichever replica comes first, so every replica on the database
// accepts every replica's tokens.
func (s *Store) jwtKey(folder string) ([]byte, error) {
	if s.db.dialect != postgresDialect {
		return LoadOrCreateKey(folder)
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	if _, err := s.db.Exec(`INSERT INTO setting(name, value) VALUES ('jwt_key', ?) ON CONFLICT DO NOTHING`, hex.EncodeToString(k)); err != nil {
		return nil, err
	}
	var v string
	if err := s.db.QueryRow(`SELECT value FROM setting WHERE name = 'jwt_key'`).Scan(&v); err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(v)
	if err != nil || len(key) < 16 {
		return nil, errors.New("the database's jwt_key setting is not a hex key of at least 16 bytes")
	}
	return key, nil
}
