# The CVM guest side: flare-init (the kit's /init) and the guest kernel.
#
#   make guest-kernel   unpack Debian's 6.12 cloud kernel (sev-guest,
#                       configfs-tsm, dm-crypt, nf_tables as modules) into
#                       build/guest-kernel without installing it on this
#                       host (scripts/guest-kernel.sh): the vmlinuz and the
#                       /lib/modules folder flare_cvm_kit's kernel and
#                       kernel_modules take
#   make flare-init     build/bin/flare-init (static, CGO off), the
#                       guest_init of flare_cvm_kit
#   make guest-e2e      TestCVMKeyRelease: a kit with its own initrd boots
#                       under QEMU (SIMULATED SEV-SNP), attests to
#                       flare-kbs, opens its LUKS root, puts the firewall
#                       up and runs its workload; a kit the broker's rule
#                       does not name gets no key
#
# `make test` fetches the kernel first; the end-to-end test runs in its
# single go test run (FLARE_REQUIRE_HOST=1: a missing piece fails).
#
# Included by GNUmakefile (GO, BIN, BUILD, SHELL=bash come from there).

GUEST_KERNEL_DIR ?= $(BUILD)/guest-kernel

.PHONY: guest-kernel flare-init guest-e2e

test: guest-kernel

guest-kernel:
	./scripts/guest-kernel.sh $(GUEST_KERNEL_DIR)

flare-init:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o $(BIN)/flare-init ./agent/cmd/flare-init

guest-e2e: guest-kernel agent-e2e-deps
	FLARE_REQUIRE_HOST=1 $(GO) test -count=1 -timeout 20m -v -run 'TestCVMKeyRelease' ./agent/e2e/
