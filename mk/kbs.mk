# flare-kbs: the key broker (Trustee KBS protocol v0.4.0) and its guest
# client (kbs/, kbs/client, kbs/rcar).
#
#   make flare-kbs        static binary (CGO off) in build/bin/flare-kbs
#   make kbs-client-size  build a static stand-in for the guest client and
#                         print its size (flare-init links kbs/client)
#   make kbs-test         the kbs packages, with a real OpenBao dev server
#                         (bao from `make vault-tools`) for the Vault KV v1
#                         store: KBS_REQUIRE_BAO=1 makes a missing bao fail
#   make kbs-bench        BenchmarkAttestVerify (broker verify latency)
#
# `make test` runs kbs/... in its single go test run (they are in ./...)
# with KBS_REQUIRE_BAO=1, after vault-tools has installed bao.
#
# Included by GNUmakefile (GO, BIN, SHELL=bash come from there).

KBS_TEST_ARGS ?= -count=1 -timeout 10m

.PHONY: flare-kbs kbs-test kbs-bench kbs-client-size

test: vault-tools
TEST_ENV += KBS_REQUIRE_BAO=1

flare-kbs:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o $(BIN)/flare-kbs ./kbs/cmd/flare-kbs

kbs-test: vault-tools
	KBS_REQUIRE_BAO=1 $(GO) test $(KBS_TEST_ARGS) ./kbs/... ./internal/attest/...

kbs-bench:
	$(GO) test -run '^$$' -bench BenchmarkAttestVerify -benchtime 200x ./kbs/

kbs-client-size:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o $(BIN)/kbs-client-size ./kbs/client/internal/sizecheck
	@ls -l $(BIN)/kbs-client-size | awk '{print "kbs client, static, stripped: " $$5 " bytes"}'
