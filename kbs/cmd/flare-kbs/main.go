// Command flare-kbs is the key broker for flare CVM kits: Trustee's KBS
// protocol v0.4.0 for SEV-SNP guests (see kbs/README.md).
//
//	flare-kbs serve --config kbs.yaml
//	flare-kbs check --config kbs.yaml
//	flare-kbs version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/flarekit/terraform-provider-flare/kbs"
	"github.com/flarekit/terraform-provider-flare/kbs/rcar"
)

var version = "dev"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "flare-kbs:", err)
		os.Exit(1)
	}
}

func usage() error {
	return errors.New("usage: flare-kbs serve --config kbs.yaml | flare-kbs check --config kbs.yaml | flare-kbs version")
}

func run(args []string) error {
	if len(args) == 0 {
		return usage()
	}
	switch args[0] {
	case "version":
		fmt.Printf("flare-kbs %s (KBS protocol %s)\n", version, rcar.ProtocolVersion)
		return nil
	case "serve", "check":
	default:
		return usage()
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	cfgPath := fs.String("config", "/etc/flare-kbs/kbs.yaml", "configuration file")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	cfg, err := kbs.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.Level()}))
	opts, err := cfg.ServerOptions(log)
	if err != nil {
		return err
	}
	tlsCfg, err := cfg.TLSConfig()
	if err != nil {
		return err
	}
	if args[0] == "check" {
		fmt.Println("config ok")
		return nil
	}
	srv, err := kbs.New(opts)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	hs := &http.Server{
		Handler: srv.Handler(), TLSConfig: tlsCfg,
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 32 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	log.Info("flare-kbs serving", "listen", ln.Addr().String(), "protocol", rcar.ProtocolVersion, "simulated", cfg.Simulated, "version", version)
	if err := hs.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
