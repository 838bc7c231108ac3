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

# cvm-e2e: NVFlare in a CVM from one Terraform configuration
# (tests/cvm/test_cvm_federation.py): flare-kbs, a server from its kit,
# site-1's flare-agent launching its CVM kit, flare-init attesting
# (SIMULATED SEV-SNP) for the root key, NVFlare's client registering and
# a NumPy job completing in the guest. Uses the newest NVFlare line's venv.
CVM_E2E_LOG ?= $(BUILD)/cvm-e2e.log
.PHONY: cvm-e2e
test: cvm-e2e
cvm-e2e: build flare-init flare-agent flare-kbs guest-kernel agent-e2e-deps interop-venv-newest terraform
	@set -o pipefail; k=$$(ls $(GUEST_KERNEL_DIR)/boot/vmlinuz-* | sort | tail -n1); \
	FLARE_BIN_DIR=$(BIN) TERRAFORM=$(TERRAFORM) FLARE_GUEST_KERNEL=$$k CVM_E2E_TIMES=$(BUILD)/cvm-e2e-times.json \
	  timeout 2400 $(BUILD)/venv-$(NVFLARE_NEWEST)/bin/python -m pytest -c tests/cvm/pytest.ini tests/cvm -v -s 2>&1 | tee $(CVM_E2E_LOG)
