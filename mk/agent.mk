# flare-agent: QMP client (internal/qmp), SNP evidence and verification
# (internal/attest), and later the agent and its end-to-end test.
#
#   make agent-deps   apt-get install what the agent and its tests use:
#                     qemu-system-x86 (Debian bookworm: QEMU 7.2, enough for
#                     QMP and the simulated mode, not for SEV-SNP, which needs
#                     QEMU >= 9.1), qemu-utils, ovmf, linux-image-cloud-amd64
#                     and busybox-static (the simulated guest's kernel and
#                     initramfs). Uses sudo when not root; skips apt when all
#                     are installed.
#   make agent-test   agent-deps, then internal/qmp (real QEMU required:
#                     QMP_REQUIRE_QEMU=1) and internal/attest (go-sev-guest's
#                     simulated test device and fake AMD chain; no network).
#
# `make test` installs the deps and runs these packages in its own go test
# run with QMP_REQUIRE_QEMU=1.
#
# Included by GNUmakefile (GO, SHELL=bash come from there).

GO              ?= go
AGENT_DEB_PKGS  ?= qemu-system-x86 qemu-utils ovmf linux-image-cloud-amd64 busybox-static
AGENT_TEST_ARGS ?= -count=1 -timeout 10m

.PHONY: agent-deps agent-test

test: agent-deps
TEST_ENV += QMP_REQUIRE_QEMU=1

agent-deps:
	./scripts/deb-install.sh $(AGENT_DEB_PKGS)

agent-test: agent-deps
	QMP_REQUIRE_QEMU=1 $(GO) test $(AGENT_TEST_ARGS) ./internal/qmp/... ./internal/attest/...
