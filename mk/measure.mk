# SEV-SNP launch digest (internal/measure) against the reference tool.
#
#   make measure-tools   sev-snp-measure into build/venv (PyPI, version pinned
#                        in tests/measure/requirements.txt)
#   make measure-deps    Debian's ovmf (/usr/share/ovmf/OVMF.fd) and a Debian
#                        kernel (linux-image-cloud-amd64, /boot/vmlinuz-*) via
#                        apt-get, when missing
#   make measure-test    both, then internal/measure's tests with
#                        SEV_SNP_MEASURE set: byte-for-byte comparison over
#                        firmwares, vCPU counts and types, with and without
#                        kernel hashes, VMSA pages, --snp-ovmf-hash
#   make measure-bench   Go benchmark and sev-snp-measure timings on the same
#                        files; writes bench/measure.md
#
# MEASURE_KERNEL=/path/vmlinuz uses another kernel instead of /boot's newest;
# MEASURE_DEBIAN_OVMF=/path/OVMF.fd another SEV-capable OVMF build.
# Included by GNUmakefile (BUILD, GO, SHELL=bash come from there).

BUILD               ?= $(CURDIR)/build
GO                  ?= go
MEASURE_VENV        ?= $(BUILD)/venv
MEASURE_REQ         := tests/measure/requirements.txt
MEASURE_STAMP       := $(MEASURE_VENV)/.measure-tools.stamp
MEASURE_CLI         := $(MEASURE_VENV)/bin/sev-snp-measure
MEASURE_DEBIAN_OVMF ?= /usr/share/ovmf/OVMF.fd
MEASURE_APT_PKGS    ?= ovmf linux-image-cloud-amd64
MEASURE_BENCH_DIR   ?= $(BUILD)/measure-bench
MEASURE_BENCH_OUT   ?= bench/measure.md

.PHONY: measure-tools measure-deps measure-test measure-bench

test: measure-test

measure-tools: $(MEASURE_STAMP)

$(MEASURE_STAMP): $(MEASURE_REQ)
	@mkdir -p $(BUILD)
	@test -x $(MEASURE_VENV)/bin/pip || python3 -m venv $(MEASURE_VENV) || { \
	  echo "python3 -m venv failed: installing python3-venv"; \
	  $(call measure_apt,python3-venv) && python3 -m venv $(MEASURE_VENV); }
	$(MEASURE_VENV)/bin/pip install -q --disable-pip-version-check -r $(MEASURE_REQ)
	@$(MEASURE_CLI) --version
	@touch $@

# measure_apt installs Debian packages (as root, or through sudo).
measure_apt = { s=; [ "$$(id -u)" = 0 ] || s=sudo; \
  $$s apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$s apt-get install -y -qq --no-install-recommends $(1); }

measure-deps:
	@set -euo pipefail; need=; \
	test -f $(MEASURE_DEBIAN_OVMF) || need="$$need ovmf"; \
	if [ -z "$${MEASURE_KERNEL:-}" ] && ! compgen -G '/boot/vmlinuz-*' >/dev/null; then need="$$need linux-image-cloud-amd64"; fi; \
	if [ -n "$$need" ]; then \
	  command -v apt-get >/dev/null || { echo "measure-deps: need$$need but there is no apt-get; set MEASURE_DEBIAN_OVMF and MEASURE_KERNEL" >&2; exit 1; }; \
	  echo "measure-deps: apt-get install$$need"; $(call measure_apt,$$need); fi; \
	test -f $(MEASURE_DEBIAN_OVMF) || { echo "measure-deps: $(MEASURE_DEBIAN_OVMF) missing after install" >&2; exit 1; }; \
	k=$${MEASURE_KERNEL:-$$(ls /boot/vmlinuz-* 2>/dev/null | sort | tail -n1)}; \
	test -r "$$k" || { echo "measure-deps: kernel '$$k' is not readable" >&2; exit 1; }; \
	echo "measure-deps: OVMF $(MEASURE_DEBIAN_OVMF), kernel $$k"

measure-test: measure-tools measure-deps
	SEV_SNP_MEASURE=$(MEASURE_CLI) MEASURE_DEBIAN_OVMF=$(MEASURE_DEBIAN_OVMF) \
	  $(GO) test -count=1 -timeout 15m ./internal/measure/...

measure-bench: measure-tools measure-deps
	@mkdir -p $(MEASURE_BENCH_DIR) $(dir $(MEASURE_BENCH_OUT))
	MEASURE_BENCH_DIR=$(MEASURE_BENCH_DIR) MEASURE_DEBIAN_OVMF=$(MEASURE_DEBIAN_OVMF) \
	  $(GO) test -run '^$$' -bench SNPLaunchDigest -benchtime 1s -count 5 -cpu 1,2 ./internal/measure/ \
	  | tee $(MEASURE_BENCH_DIR)/go-bench.txt
	PATH=$(MEASURE_VENV)/bin:$$PATH $(MEASURE_VENV)/bin/python scripts/measure-bench.py \
	  $(MEASURE_BENCH_DIR) $(MEASURE_BENCH_DIR)/go-bench.txt $(MEASURE_BENCH_OUT)
