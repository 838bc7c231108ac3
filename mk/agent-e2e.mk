# flare-agent itself (agent/...): unit tests, and the end-to-end test that
# boots a real guest.
#
#   make agent-e2e-deps  apt-get install what the end-to-end test uses:
#                        qemu-system-x86, qemu-utils, e2fsprogs, ovmf,
#                        linux-image-cloud-amd64, busybox-static, and
#                        chromium for the status page test. Uses sudo when
#                        not root; skips apt when all are installed.
#   make agent-unit      go test ./agent/... -short (no guest; the status
#                        page test still runs Chromium when installed)
#   make agent-e2e       agent-e2e-deps, then every agent test including
#                        TestAgentEndToEnd: builds a busybox initramfs with
#                        the static `flare-agent guest --simulated`
#                        responder, a CVM kit (internal/cvm.Build) around the
#                        Debian cloud kernel, starts `flare-agent serve` on
#                        127.0.0.1 with a test CA, launches, attests,
#                        kill -9s and restarts the agent (re-attach), kills
#                        QEMU (restart policy), uploads, stops. About 30 s.
#   make flare-agent     build/bin/flare-agent (static, CGO off)
#
# `make test` installs the deps and runs these tests (and the provider's
# TestAccCVMInstance, which starts a real agent too) in its own go test run
# with FLARE_REQUIRE_HOST=1: a missing host piece fails instead of skipping.
#
# FLARE_E2E_ACCEL=kvm runs the guest under KVM (default tcg: nested KVM on
# CI machines offers /dev/kvm but hangs booting Linux). FLARE_E2E_KEEP=1
# keeps the test's folder (kits, state, agent.log) when it fails.
#
# Included by GNUmakefile (BUILD, BIN, GO, SHELL=bash come from there).

GO                ?= go
AGENT_E2E_DEB_PKGS ?= qemu-system-x86 qemu-utils e2fsprogs ovmf linux-image-cloud-amd64 busybox-static chromium
AGENT_E2E_ARGS     ?= -count=1 -timeout 15m

.PHONY: agent-e2e-deps agent-unit agent-e2e flare-agent

test: agent-e2e-deps
TEST_ENV += FLARE_REQUIRE_HOST=1

agent-e2e-deps:
	./scripts/deb-install.sh $(AGENT_E2E_DEB_PKGS)

agent-unit:
	$(GO) test -count=1 -short ./agent/...

agent-e2e: agent-e2e-deps
	$(GO) test $(AGENT_E2E_ARGS) -v -run 'TestAgentEndToEnd' ./agent/e2e/
	$(GO) test $(AGENT_E2E_ARGS) -skip 'TestAgentEndToEnd' ./agent/...

flare-agent:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o $(BIN)/flare-agent ./agent/cmd/flare-agent
