# make interop — prove the kits with the real NVFlare runtime.
#
# Builds the provider, applies examples/quickstart twice into fresh temp dirs
# (the project under test, and a second one with another ca_dir, i.e. another
# root CA), then runs tests/interop with pytest from build/venv: NVFlare's own
# signature/certificate/startup checks on every kit, a server and two clients
# started from their kits on 127.0.0.1, a job submitted with the admin kit
# through the FLARE API, a clean shutdown, and the negative cases.
#
# Included from GNUmakefile (BUILD, BIN, TERRAFORM come from there); `make test` runs it.
#   INTEROP_KEEP=1     keep the temp dir (kits, logs) after a passing run
#   PYTEST_ARGS=...    extra pytest arguments, e.g. PYTEST_ARGS='-k federation -x'

INTEROP_VENV  ?= $(BUILD)/venv
INTEROP_PY    := $(INTEROP_VENV)/bin/python
INTEROP_STAMP := $(INTEROP_VENV)/.interop-tools.stamp
INTEROP_REQ   := tests/interop/requirements.txt
INTEROP_RC    := $(BUILD)/interop.tfrc
INTEROP_LIMIT ?= 900

.PHONY: interop interop-venv interop-vault

# Extra terraform arguments for the project under test (interop-vault sets
# the Vault Transit CA backend).
INTEROP_A_ARGS ?=

interop-venv: $(INTEROP_STAMP)

# One place for the Python pins (nvflare, pytest, psutil); re-installed when
# that file changes.
$(INTEROP_STAMP): $(INTEROP_REQ)
	@test -x $(INTEROP_PY) || python3 -m venv $(INTEROP_VENV)
	$(INTEROP_PY) -m pip install --quiet --disable-pip-version-check -r $(INTEROP_REQ)
	@touch $@

# Apply the quickstart in $(1) with $(2) as ca_dir; ports from the shell
# variables fl/adm. Terraform's output is shown only when it fails.
define interop_apply
	mkdir -p $(1) && cp examples/quickstart/main.tf $(1)/ && \
	( cd $(1) && TF_CLI_CONFIG_FILE=$(INTEROP_RC) $(TERRAFORM) apply -auto-approve -input=false -no-color \
	    -var server_host=localhost -var fed_learn_port=$$fl -var admin_port=$$adm -var ca_dir=$(2) $(3) \
	    > apply.log 2>&1 && \
	  TF_CLI_CONFIG_FILE=$(INTEROP_RC) $(TERRAFORM) output -json > outputs.json 2>>apply.log ) \
	|| { cat $(1)/apply.log; exit 1; }
endef

interop: build terraform $(INTEROP_STAMP)
	@printf 'provider_installation {\n  dev_overrides {\n    "flarekit/flare" = "%s"\n  }\n  direct {}\n}\n' "$(BIN)" > $(INTEROP_RC)
	@set -euo pipefail; \
	tmp=$$(mktemp -d "$${TMPDIR:-/tmp}/flare-interop.XXXXXX"); \
	if [ -z "$(INTEROP_KEEP)" ]; then trap 'rm -rf "$$tmp"' EXIT; fi; \
	read -r fl adm < <($(INTEROP_PY) -c 'import socket; s=[socket.socket() for _ in range(2)]; [x.bind(("127.0.0.1", 0)) for x in s]; print(*[x.getsockname()[1] for x in s])'); \
	echo "interop: work dir $$tmp (removed after the run unless INTEROP_KEEP=1), ports fed_learn=$$fl admin=$$adm"; \
	$(call interop_apply,$$tmp/a,.flare-ca,$(INTEROP_A_ARGS)); \
	if [[ "$(INTEROP_A_ARGS)" == *vault_transit* ]]; then \
	  test ! -e $$tmp/a/.flare-ca/rootCA.key || { echo "interop: a root key file exists although the CA is in Vault"; exit 1; }; \
	  grep -q '"id": "vault_transit:' $$tmp/a/terraform.tfstate || { echo "interop: the project is not on the Vault backend"; exit 1; }; \
	  echo "interop: project under test signs with Vault Transit (no root key on disk)"; \
	fi; \
	$(call interop_apply,$$tmp/b,.other-ca); \
	FLARE_INTEROP_A=$$tmp/a FLARE_INTEROP_B=$$tmp/b FLARE_INTEROP_FL_PORT=$$fl FLARE_INTEROP_ADMIN_PORT=$$adm \
	PYTHONDONTWRITEBYTECODE=1 timeout -k 10 $(INTEROP_LIMIT) \
	$(INTEROP_PY) -m pytest -c tests/interop/pytest.ini --basetemp=$$tmp/pytest $(PYTEST_ARGS) \
	    tests/interop/test_kits.py tests/interop/test_federation.py

test: interop

# The same proof with the root CA key in Vault Transit: an OpenBao dev server
# on 127.0.0.1 (mk/vault.mk), the quickstart applied with
# ca_backend=vault_transit, then every interop test against those kits.
interop-vault: vault-tools
	$(call with_dev_server,,$(MAKE) --no-print-directory interop INTEROP_A_ARGS=-var\ ca_backend=vault_transit)

test: interop-vault
