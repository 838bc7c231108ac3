# make interop — prove the kits with the real NVFlare runtime, on every
# NVFlare release line the provider supports.
#
# Per line (one venv each, build/venv-<version>): builds the provider, applies
# examples/quickstart plus tests/interop/relay.tf twice into fresh temp dirs
# with nvflare_version=<major.minor> (the project under test, and a second one
# with another ca_dir, i.e. another root CA), then runs tests/interop with
# pytest from that line's venv: NVFlare's own signature/certificate/startup
# checks on every kit, the kits side by side with that line's `nvflare
# provision`, a server, a relay and two clients (one behind the relay) started
# from their kits on 127.0.0.1, a job submitted with the admin kit through the
# FLARE API, a clean shutdown, and the negative cases. The lines run one after
# another; a failed line does not stop the next, and the summary names each.
#
# Included from GNUmakefile (BUILD, BIN, TERRAFORM come from there); `make test` runs it.
# tests/interop/README.md: what each line is checked for, and the table of allowed differences.
#   NVFLARE=2.9.0      run one line only (any version; its venv is made on first use)
#   INTEROP_KEEP=1     keep the temp dirs (kits, logs) after a passing run
#   PYTEST_ARGS=...    extra pytest arguments, e.g. PYTEST_ARGS='-k federation -x'
#   INTEROP_LIMIT=900  seconds the pytest run of one line may take

# The supported NVFlare release lines, newest last: one pinned version each.
NVFLARE_VERSIONS ?= 2.7.3 2.8.3 2.9.0
NVFLARE_NEWEST   := $(lastword $(NVFLARE_VERSIONS))
NVFLARE          ?=
INTEROP_LINES    := $(or $(NVFLARE),$(NVFLARE_VERSIONS))

# build/venv-<version>: nvflare==<version> beside the pins of
# requirements.txt (pytest, psutil); re-installed when that file changes.
INTEROP_REQ   := tests/interop/requirements.txt
interop_venv   = $(BUILD)/venv-$(1)
interop_stamp  = $(BUILD)/venv-$(1)/.interop-tools.stamp
# The newest line's venv, for mk/bench.mk (nvflare provision and psutil).
INTEROP_PY    := $(call interop_venv,$(NVFLARE_NEWEST))/bin/python
INTEROP_STAMP := $(call interop_stamp,$(NVFLARE_NEWEST))
INTEROP_RC    := $(BUILD)/interop.tfrc
INTEROP_LIMIT ?= 900

# Logs of the lines' runs: $(INTEROP_LOG)<version>.log (interop-vault has its own).
INTEROP_LOG   ?= $(BUILD)/interop-

.PHONY: interop interop-venv interop-venv-newest interop-line interop-vault

# Extra terraform arguments for the project under test (interop-vault sets
# the Vault Transit CA backend).
INTEROP_A_ARGS ?=

interop-venv: $(foreach v,$(INTEROP_LINES),$(call interop_stamp,$(v)))

# For files included before this one (mk/bench.mk): they cannot name
# $(INTEROP_STAMP) as a prerequisite, it is not defined yet when they are read.
interop-venv-newest: $(INTEROP_STAMP)

$(BUILD)/venv-%/.interop-tools.stamp: $(INTEROP_REQ)
	@mkdir -p $(BUILD)
	@test -x $(BUILD)/venv-$*/bin/python || python3 -m venv $(BUILD)/venv-$*
	$(BUILD)/venv-$*/bin/python -m pip install --quiet --disable-pip-version-check -r $(INTEROP_REQ) nvflare==$*
	@touch $@

# Apply the quickstart, relay.tf and relay_override.tf (Terraform merges it
# into the quickstart's own blocks) in $(1) with $(2) as ca_dir; NVFlare
# version and ports from the shell variables v, fl, adm, relay. Terraform's
# output is shown only when it fails.
define interop_apply
	mkdir -p $(1) && cp examples/quickstart/main.tf tests/interop/relay.tf tests/interop/relay_override.tf $(1)/ && \
	( cd $(1) && TF_CLI_CONFIG_FILE=$(INTEROP_RC) $(TERRAFORM) apply -auto-approve -input=false -no-color \
	    -var nvflare_version=$${v%.*} -var 'clients=["site-1"]' -var server_host=localhost \
	    -var fed_learn_port=$$fl -var admin_port=$$adm -var relay_port=$$relay -var ca_dir=$(2) $(3) \
	    > apply.log 2>&1 && \
	  TF_CLI_CONFIG_FILE=$(INTEROP_RC) $(TERRAFORM) output -json > outputs.json 2>>apply.log ) \
	|| { cat $(1)/apply.log; exit 1; }
endef

interop: build terraform interop-venv
	@printf 'provider_installation {\n  dev_overrides {\n    "flarekit/flare" = "%s"\n  }\n  direct {}\n}\n' "$(BIN)" > $(INTEROP_RC)
	@set -uo pipefail; summary=(); failed=0; \
	for v in $(INTEROP_LINES); do \
	  echo "== interop: NVFlare $$v"; t0=$$SECONDS; \
	  $(MAKE) --no-print-directory interop-line INTEROP_NVFLARE=$$v 2>&1 | tee $(INTEROP_LOG)$$v.log; rc=$${PIPESTATUS[0]}; \
	  res=$$(grep -E '^=+ .*[0-9.]+s( \([0-9:]+\))? =+$$' $(INTEROP_LOG)$$v.log | tail -1 | tr -d '='); \
	  if [ $$rc -eq 0 ]; then st=ok; else st=FAILED; failed=1; fi; \
	  summary+=("$$(printf '  NVFlare %-7s %-6s %4ds  %s' $$v $$st $$((SECONDS - t0)) "$${res:- (no pytest summary)}")"); \
	done; \
	echo "== interop summary (logs: $(INTEROP_LOG)<version>.log)"; printf '%s\n' "$${summary[@]}"; \
	exit $$failed

# NVFlare 2.9's distributed provisioning round trip (nvflare cert request ->
# flare_request_approval -> nvflare package -> the site registers) applies its
# own local-CA project; it skips itself before 2.9, and the Vault run leaves
# it out (provider/vault_ca_test.go approves with the Transit CA).
INTEROP_DISTRIBUTED = $(if $(findstring vault_transit,$(INTEROP_A_ARGS)),,tests/interop/test_distributed.py)

# NVFlare's CC runtime checks in mock mode (no SEV hardware): CC kits
# (flare_startup_kit.cc) against nvflare provision with CCBuilder, a CC
# server and client attesting with MockAuthorizer, a job, and a kit without
# CC refused. Its own local-CA project, so the Vault run leaves it out too.
INTEROP_CC = $(if $(findstring vault_transit,$(INTEROP_A_ARGS)),,tests/interop/test_cc.py)

# One line: INTEROP_NVFLARE=<version>, its venv made (interop does both).
interop-line:
	@set -euo pipefail; v=$(INTEROP_NVFLARE); py=$(call interop_venv,$(INTEROP_NVFLARE))/bin/python; \
	tmp=$$(mktemp -d "$${TMPDIR:-/tmp}/flare-interop-$$v.XXXXXX"); \
	if [ -z "$(INTEROP_KEEP)" ]; then trap 'rm -rf "$$tmp"' EXIT; fi; \
	read -r fl adm relay < <($$py -c 'import socket; s=[socket.socket() for _ in range(3)]; [x.bind(("127.0.0.1", 0)) for x in s]; print(*[x.getsockname()[1] for x in s])'); \
	echo "interop: NVFlare $$v, work dir $$tmp (removed after the run unless INTEROP_KEEP=1), ports fed_learn=$$fl admin=$$adm relay=$$relay"; \
	$(call interop_apply,$$tmp/a,.flare-ca,$(INTEROP_A_ARGS)); \
	if [[ "$(INTEROP_A_ARGS)" == *vault_transit* ]]; then \
	  test ! -e $$tmp/a/.flare-ca/rootCA.key || { echo "interop: a root key file exists although the CA is in Vault"; exit 1; }; \
	  grep -q '"id": "vault_transit:' $$tmp/a/terraform.tfstate || { echo "interop: the project is not on the Vault backend"; exit 1; }; \
	  echo "interop: project under test signs with Vault Transit (no root key on disk)"; \
	fi; \
	$(call interop_apply,$$tmp/b,.other-ca); \
	FLARE_INTEROP_NVFLARE=$$v FLARE_INTEROP_A=$$tmp/a FLARE_INTEROP_B=$$tmp/b \
	FLARE_INTEROP_FL_PORT=$$fl FLARE_INTEROP_ADMIN_PORT=$$adm FLARE_INTEROP_RELAY_PORT=$$relay \
	FLARE_INTEROP_TERRAFORM=$(TERRAFORM) FLARE_INTEROP_TFRC=$(INTEROP_RC) \
	PYTHONDONTWRITEBYTECODE=1 timeout -k 10 $(INTEROP_LIMIT) \
	$$py -m pytest -c tests/interop/pytest.ini --basetemp=$$tmp/pytest $(PYTEST_ARGS) \
	    tests/interop/test_kits.py tests/interop/test_federation.py $(INTEROP_DISTRIBUTED) $(INTEROP_CC)

test: interop

# The same proof with the root CA key in Vault Transit: an OpenBao dev server
# on 127.0.0.1 (mk/vault.mk), the quickstart applied with
# ca_backend=vault_transit, then every interop test against those kits. On
# the newest line only: Vault changes who signs the root certificate, the
# participant certificates and signature.json (Transit instead of a key
# file), not the kit layout or contents a line decides, which the matrix
# above already proves line by line with the local CA.
interop-vault: vault-tools
	$(call with_dev_server,,$(MAKE) --no-print-directory interop NVFLARE=$(NVFLARE_NEWEST) \
	    INTEROP_LOG=$(BUILD)/interop-vault- INTEROP_A_ARGS=-var\ ca_backend=vault_transit)

test: interop-vault
