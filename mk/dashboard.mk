# flare-dashboard: NVFlare's Dashboard API in Go (dashboard/, issue 13).
#
#   make dashboard        build build/bin/flare-dashboard
#   make dashboard-test   the dashboard's Go tests, including the differential
#                         test against NVFlare 2.9.0's own Dashboard (Flask,
#                         from build/venv-2.9.0, on 127.0.0.1) and
#                         TestKitsStartNVFlare (FLARE_DASHBOARD_E2E=1: kits
#                         downloaded from ours start an NVFlare 2.9 server and
#                         client, and the admin kit sees the client); a
#                         missing venv fails (FLARE_REQUIRE_NVFLARE=1)
#                         instead of skipping; TestWebUIInChromium drives
#                         our web UI (/ui/) in headless Chromium (Debian
#                         chromium, installed here; FLARE_REQUIRE_CHROMIUM=1
#                         fails instead of skipping). About 25 s.
#                         The PostgreSQL tests (TestPostgres*, and
#                         internal/pgtest, which other suites reuse) start a
#                         throwaway cluster on 127.0.0.1 from Debian's
#                         postgresql (installed here; FLARE_REQUIRE_POSTGRES=1
#                         fails instead of skipping).
#                         TestClientRequestNVFlare: the real `nvflare cert
#                         request` and `nvflare package` (2.9.0 venv,
#                         FLARE_REQUIRE_NVFLARE=1) around a site that
#                         registers with its request zip.
#                         TestVaultTransitRoot signs through an OpenBao dev
#                         server (`bao` from make vault-tools, started on
#                         127.0.0.1 by kbs/kbstest; KBS_REQUIRE_BAO=1 fails
#                         instead of skipping).
#                         TestLoadSmoke: the load bench's driver at 20 users,
#                         10 sites, 10 downloads against both Dashboards
#                         (errors and kit contents only; the full load is
#                         make bench-dashboard, mk/bench.mk).
#   make dashboard-screenshots  rerun TestWebUIInChromium and write its page
#                         screenshots to docs/dashboard/ (tfplugindocs leaves
#                         that folder alone; commit them)
#
# `make test` runs them all in its one go test run, with the same switches:
# the differential test and TestKitsStartNVFlare need the 2.9.0 venv (made by
# mk/interop.mk's rule) and Info-ZIP's zip and unzip (kit downloads are
# `zip -P` archives, as NVFlare's), installed here.
#
# Included by GNUmakefile (BUILD, BIN, GO come from there); the venv rule
# ($(BUILD)/venv-%/.interop-tools.stamp) is mk/interop.mk's.

DASHBOARD_BIN        := $(BIN)/flare-dashboard
DASHBOARD_TEST_ARGS  ?= -count=1 -timeout 5m

.PHONY: dashboard dashboard-test dashboard-deps dashboard-screenshots

test: dashboard-deps $(BUILD)/venv-2.9.0/.interop-tools.stamp vault-tools
TEST_ENV += KBS_REQUIRE_BAO=1 FLARE_REQUIRE_NVFLARE=1 FLARE_DASHBOARD_E2E=1 FLARE_REQUIRE_CHROMIUM=1 FLARE_REQUIRE_POSTGRES=1

dashboard-deps:
	./scripts/deb-install.sh zip unzip chromium postgresql

dashboard:
	$(GO) build -o $(DASHBOARD_BIN) ./dashboard/cmd/flare-dashboard

dashboard-test: dashboard-deps $(BUILD)/venv-2.9.0/.interop-tools.stamp vault-tools
	KBS_REQUIRE_BAO=1 FLARE_REQUIRE_NVFLARE=1 FLARE_DASHBOARD_E2E=1 FLARE_REQUIRE_CHROMIUM=1 FLARE_REQUIRE_POSTGRES=1 $(GO) test $(DASHBOARD_TEST_ARGS) ./dashboard/... ./internal/pgtest/

dashboard-screenshots: dashboard-deps
	FLARE_REQUIRE_CHROMIUM=1 FLARE_DASHBOARD_SCREENSHOTS=$(CURDIR)/docs/dashboard $(GO) test -count=1 -run TestWebUIInChromium ./dashboard/
