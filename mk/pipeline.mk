# Pipeline acceptance test (issue 14): runners that share nothing but
# Terraform's pg backend and Vault.
#
#   make pipeline-deps   Debian's postgresql (initdb, pg_ctl) and OpenBao's
#                        bao (mk/vault.mk's vault-tools)
#   make pipeline-test   TestAccPipeline and TestAccRootOfTrust_CLI: the test
#                        starts a throwaway PostgreSQL cluster on 127.0.0.1
#                        (as nobody when run as root) and an OpenBao dev
#                        server (scripts/bao-dev.sh), installs the provider
#                        from a filesystem mirror, and drives the real
#                        terraform: runner A applies with the vault_transit
#                        backend; runner B (fresh directory, same backend)
#                        plans only kit writes, applies, and its kits are A's
#                        but for signature.json; runner C fails cleanly while
#                        A holds the state lock and waits with -lock-timeout;
#                        two concurrent applies make one root. About 20 s.
#
# `make test` runs it in its one go test run; FLARE_REQUIRE_PIPELINE=1 makes
# a missing PostgreSQL or bao a failure instead of a skip.
#
# Included by GNUmakefile (BUILD, GO, TERRAFORM come from there).

PIPELINE_TEST_ARGS ?= -count=1 -timeout 10m

.PHONY: pipeline-deps pipeline-test

test: pipeline-deps
TEST_ENV += FLARE_REQUIRE_PIPELINE=1

pipeline-deps: vault-tools
	./scripts/deb-install.sh postgresql

pipeline-test: pipeline-deps terraform
	FLARE_REQUIRE_PIPELINE=1 TF_ACC=1 TF_ACC_TERRAFORM_PATH=$(TERRAFORM) $(GO) test $(PIPELINE_TEST_ARGS) -run 'TestAccPipeline|TestAccRootOfTrust_CLI' ./provider/
