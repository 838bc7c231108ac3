// Command flare-dashboard serves an NVIDIA FLARE Dashboard API
// (API-compatible with NVFlare's own) from one folder.
//
//	flare-dashboard serve --folder DIR [--port 8443] [--host 127.0.0.1] [--cred email:password:org] [--passphrase P] [--database-url URL] [--vault-transit MOUNT/KEY] [--ui DIR] [--key-pool N]
//
// --key-pool N (default 32; 0 disables) keeps up to N participant keys
// generated ahead of kit downloads on spare cores, in memory only.
//
// --vault-transit <mount>/<key> (VAULT_ADDR, VAULT_TOKEN from the
// environment) keeps the root CA key in Vault Transit: the Dashboard signs
// through it and never holds the key.
//
// DATABASE_URL (or --database-url) postgres://... selects PostgreSQL, which
// several replicas can share; the default is <folder>/db.sqlite.
//
// HTTPS when the folder holds web.crt and web.key (or cert/web.crt and
// cert/web.key, NVFlare's layout).
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/flarekit/terraform-provider-flare/dashboard"
	"github.com/flarekit/terraform-provider-flare/internal/vaultca"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "flare-dashboard:", err)
		os.Exit(1)
	}
}

const usage = `usage: flare-dashboard serve --folder DIR [--port N] [--host ADDR] [--cred email:password:org] [--passphrase P] [--database-url URL] [--vault-transit MOUNT/KEY] [--ui DIR] [--key-pool N]`

func run(args []string) error {
	if len(args) == 0 || args[0] != "serve" {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	folder := fs.String("folder", "", "folder holding db.sqlite and jwt.key (created if missing)")
	port := fs.Int("port", 8443, "TCP port (0: any free port)")
	host := fs.String("host", "127.0.0.1", "address to listen on")
	cred := fs.String("cred", os.Getenv("NVFL_CREDENTIAL"), "first project admin as email:password:org (first start only; default: admin@nvidia.com with a generated password)")
	passphrase := fs.String("passphrase", os.Getenv("NVFL_DASHBOARD_PP"), "passphrase sealing the root CA key in the database (default $NVFL_DASHBOARD_PP; none: plain, as NVFlare's)")
	dbURL := fs.String("database-url", os.Getenv("DATABASE_URL"), "database: postgres://user:password@host/db for PostgreSQL (replicas share it), sqlite:///path, or empty for <folder>/db.sqlite (default $DATABASE_URL)")
	transit := fs.String("vault-transit", os.Getenv("FLARE_DASHBOARD_VAULT_TRANSIT"), "sign with this Vault Transit key, <mount>/<key> (created non-exportable if missing), so the Dashboard never holds the root CA key; Vault from VAULT_ADDR, VAULT_TOKEN (VAULT_CACERT, VAULT_NAMESPACE, ...) (default $FLARE_DASHBOARD_VAULT_TRANSIT)")
	keyPool := fs.Int("key-pool", dashboard.DefaultKeyPool, "participant keys (RSA-2048) kept generated ahead of kit downloads by GOMAXPROCS-1 background workers, in memory only, each used once; 0 disables (every kit makes its key inline)")
	ui := fs.String("ui", "", "serve NVFlare's web UI from this folder (nvflare/dashboard/application/static of an nvflare install)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *folder == "" {
		return errors.New("--folder is required\n" + usage)
	}
	if *keyPool < 0 {
		return fmt.Errorf("--key-pool %d: use 0 (off) or more", *keyPool)
	}
	var c *dashboard.Credential
	if *cred != "" {
		pc, err := dashboard.ParseCredential(*cred)
		if err != nil {
			return err
		}
		c = &pc
	}
	srv, err := dashboard.OpenURL(*folder, *dbURL, c, os.Stdout)
	if err != nil {
		return err
	}
	defer srv.Close()
	srv.Passphrase = *passphrase
	if *transit != "" {
		mount, key, err := dashboard.ParseTransitKey(*transit)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		v, warnings, err := dashboard.OpenVaultCA(ctx, vaultca.Config{TransitMount: mount, KeyName: key})
		cancel()
		for _, w := range warnings {
			fmt.Fprintln(os.Stderr, "flare-dashboard: vault transit:", w)
		}
		if err != nil {
			return fmt.Errorf("--vault-transit %s: %w", *transit, err)
		}
		srv.Vault = v
		fmt.Printf("root CA key: Vault Transit %s/%s at %s (new projects freeze around its latest version)\n", mount, key, v.Config.EffectiveAddress())
	}
	srv.UIDir = *ui
	srv.StartKeyPool(*keyPool)
	ln, err := net.Listen("tcp", net.JoinHostPort(*host, fmt.Sprint(*port)))
	if err != nil {
		return err
	}
	tlsConf, err := dashboard.LoadTLS(*folder)
	if err != nil {
		ln.Close()
		return err
	}
	scheme := "http"
	if tlsConf != nil {
		ln, scheme = tls.NewListener(ln, tlsConf), "https"
	}
	fmt.Printf("flare-dashboard listening on %s://%s\n", scheme, ln.Addr())
	fmt.Printf("web UI: %s://%s/ui/\n", scheme, ln.Addr())
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return hs.Shutdown(sctx)
	}
}
