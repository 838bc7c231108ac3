// Command flare-agent runs on a site's host: `serve` is the mTLS API that
// launches CVM kits with QEMU and verifies their attestation; `guest` is
// the attestation responder inside the CVM; `probe` tells whether this
// host can run SEV-SNP guests.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/flarekit/terraform-provider-flare/agent"
	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/agent/config"
	"github.com/flarekit/terraform-provider-flare/agent/guest"
	"github.com/flarekit/terraform-provider-flare/agent/launch"
	"github.com/flarekit/terraform-provider-flare/agent/manager"
	"github.com/flarekit/terraform-provider-flare/agent/server"
	"github.com/flarekit/terraform-provider-flare/internal/attest"
)

func main() {
	root := &cobra.Command{
		Use:           "flare-agent",
		Short:         "Launch NVFlare CVM kits with QEMU and verify their SEV-SNP attestation",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(serveCmd(), guestCmd(), probeCmd(), versionCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "flare-agent:", err)
		os.Exit(1)
	}
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

func versionCmd() *cobra.Command {
	return &cobra.Command{Use: "version", Short: "Print the version", Args: cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), server.Version) }}
}

func probeCmd() *cobra.Command {
	var qemu, mode, cfgPath, stateDir string
	var strict bool
	c := &cobra.Command{
		Use:   "probe",
		Short: "Check QEMU, KVM and SEV-SNP support on this host, and what the agent lacks when run as this user",
		Long: `Check QEMU, KVM and SEV-SNP support on this host and print what a launch would use.

"runtime" reports what the agent lacks when run as the current user, the
way the systemd unit runs it (the unprivileged flare-agent user with the
kvm group): access to /dev/kvm and /dev/sev, a writable state_dir, the site
kit, and QEMU starting under its seccomp sandbox. Running as root is a
warning. Run it as that user:

  sudo -u flare-agent flare-agent probe --config /etc/flare-agent/agent.yaml

With --strict it exits 1 when runtime.problems is not empty.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env := currentEnv()
			env.StateDir = stateDir
			if cfgPath != "" {
				cfg, err := config.Load(cfgPath)
				if err != nil {
					return err
				}
				if !cmd.Flags().Changed("qemu") {
					qemu = cfg.QEMU
				}
				if !cmd.Flags().Changed("mode") {
					mode = cfg.Mode
				}
				if stateDir == "" {
					env.StateDir = cfg.StateDir
				}
				env.KitDir = cfg.AgentKitDir
			}
			env.Mode, env.QEMU = mode, qemu
			h := launch.Probe(cmd.Context(), qemu)
			eff, err := h.EffectiveMode(mode)
			rt := checkRuntime(cmd.Context(), env)
			out := map[string]any{"qemu": h.QEMU, "qemu_version": h.QEMUVersionText, "qemu_error": h.QEMUError,
				"kvm": h.KVM, "kvm_error": h.KVMError, "snp": h.SNP, "mode": mode, "effective_mode": eff,
				"runtime": rt}
			if err != nil {
				out["mode_error"] = err.Error()
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			if err := enc.Encode(out); err != nil {
				return err
			}
			if strict && len(rt.Problems) > 0 {
				return fmt.Errorf("%d problem(s): %s", len(rt.Problems), strings.Join(rt.Problems, "; "))
			}
			return nil
		},
	}
	c.Flags().StringVar(&qemu, "qemu", "qemu-system-x86_64", "QEMU binary (default: the config's)")
	c.Flags().StringVar(&mode, "mode", api.ModeAuto, "mode to resolve: auto, snp or simulated (default: the config's)")
	c.Flags().StringVarP(&cfgPath, "config", "c", "", "agent.yaml to take qemu, mode, state_dir and agent_kit_dir from")
	c.Flags().StringVar(&stateDir, "state-dir", "", "state directory to check for writing (default: the config's)")
	c.Flags().BoolVar(&strict, "strict", false, "exit 1 when the runtime check finds a problem")
	return c
}

func serveCmd() *cobra.Command {
	var cfgPath string
	c := &cobra.Command{
		Use:   "serve",
		Short: "Serve the mTLS API (launch, stop, attest CVM kits)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			return serve(cmd.Context(), cfg)
		},
	}
	c.Flags().StringVarP(&cfgPath, "config", "c", "/etc/flare-agent/agent.yaml", "agent.yaml")
	return c
}

func serve(ctx context.Context, cfg *config.Config) error {
	log := newLogger(cfg.LogLevel)
	// The agent's own identity (flare_agent_identity), never a
	// participant's startup kit.
	id, err := server.LoadIdentity(cfg.AgentKitDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return err
	}
	host := launch.Probe(ctx, cfg.QEMU)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	minTCB, _ := attest.ParseTCBVersion(cfg.MinimumTCB) // checked by config.Load; "" is 0, no minimum
	mgr := manager.New(cfg, host, manager.AttestVerifier{VCEKCacheDir: cfg.VCEKCacheDir, MinimumTCB: minTCB}, log, reg)
	mgr.KitRoot = id.Root
	mgr.Site = id.Site // only kits whose launch.json names this participant run here
	mode, modeErr := mgr.Mode()
	attrs := []any{"site", id.Site, "org", id.Org, "configured_mode", cfg.Mode, "qemu", host.QEMU, "qemu_version", host.QEMUVersionText, "kvm", host.KVM}
	if host.SNP.Available {
		log.Info("SEV-SNP is available", append(attrs, "cbitpos", host.SNP.CBitPos)...)
	} else {
		log.Warn("SEV-SNP is NOT available on this host: "+strings.Join(host.SNP.Reasons, "; "), attrs...)
	}
	switch {
	case modeErr != nil:
		log.Error("launches are refused", "err", modeErr)
	case mode == api.ModeSimulated:
		log.Warn("launches use SIMULATED mode: guests get no SEV-SNP protection and their reports are signed by a fake AMD chain (go-sev-guest test keys)")
	default:
		log.Info("launches use SEV-SNP")
	}
	if host.KVMError != "" {
		log.Warn(host.KVMError)
	}
	if err := mgr.Recover(ctx); err != nil {
		return fmt.Errorf("recovering CVMs from %s: %w", cfg.StateDir, err)
	}
	srv := server.New(cfg, id, mgr, log, reg, agent.OpenAPI)

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	hs := srv.HTTPServer(log) // read, write, idle and header timeouts from agent.yaml
	errc := make(chan error, 2)
	go func() { errc <- hs.ServeTLS(ln, "", "") }()
	var status *http.Server
	if cfg.StatusListen != "" {
		sl, err := net.Listen("tcp", cfg.StatusListen)
		if err != nil {
			return err
		}
		status = srv.StatusHTTPServer()
		go func() { errc <- status.Serve(sl) }()
		log.Info("status page on plain HTTP", "addr", sl.Addr().String())
	}
	log.Info("flare-agent serving", "addr", ln.Addr().String(), "state_dir", cfg.StateDir, "cvms", len(mgr.List()), "version", server.Version)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		log.Info("shutting down; CVMs keep running", "signal", s.String())
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			log.Error("server failed", "err", err)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	if status != nil {
		_ = status.Shutdown(sctx)
	}
	mgr.Close()
	return nil
}

func guestCmd() *cobra.Command {
	var port string
	var sim, powerButton bool
	var wait time.Duration
	c := &cobra.Command{
		Use:   "guest",
		Short: "Attestation responder inside the CVM: answers nonces on the virtio-serial port with SEV-SNP evidence",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			var src guest.Source = &guest.HardwareSource{}
			if sim {
				log.Warn("SIMULATED mode: reports come from go-sev-guest's test device, signed by a fake AMD chain; they prove nothing")
				src = &guest.SimulatedSource{}
			}
			r := &guest.Responder{Source: src, Log: log.With("component", "flare-agent-guest"), Version: server.Version}
			if _, err := r.GuestKey(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if powerButton {
				go guest.WatchPowerButton(ctx, log)
			}
			return r.ServePort(ctx, port, wait)
		},
	}
	c.Flags().StringVar(&port, "port", "/dev/virtio-ports/"+launch.AttestPortName, "virtio-serial port of the attestation channel")
	c.Flags().BoolVar(&sim, "simulated", false, "use the SIMULATED SEV-SNP device (go-sev-guest test device, fake AMD chain) instead of /dev/sev-guest")
	c.Flags().BoolVar(&powerButton, "power-button", false, "power the guest off on an ACPI power button press (QMP system_powerdown), for minimal guests without acpid or systemd")
	c.Flags().DurationVar(&wait, "wait", 60*time.Second, "how long to wait for the port to appear")
	return c
}
