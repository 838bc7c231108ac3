# make bench — terraform apply with this provider vs `nvflare provision`, and
# the Go benchmarks of key generation, certificate issuance and kit writing
# (one package at a time: -p 1, so no two packages' benchmarks share the CPUs).
# Writes bench/results.md. Not part of `make test` (it takes minutes).
#
# Uses the newest NVFlare line's venv of mk/interop.mk (build/venv-<newest of
# NVFLARE_VERSIONS>: that nvflare, psutil from tests/interop/requirements.txt).
#   BENCH_SIZES=10,100,1000     participants per project (1 server, 1 admin, N-2 clients)
#   BENCH_PARALLELISM=4         terraform -parallelism for the main table
#   BENCH_SWEEP=2,4,10,20       -parallelism values compared at N=BENCH_SWEEP_SIZE ('' skips)
#   BENCH_PER_RESOURCE_SIZES=100,1000  the layout with one resource per client, for comparison
#                               (the largest with TF_LOG=trace; '' skips)
#   BENCH_GO_TIME=3s            -benchtime of the Go benchmarks
#   BENCH_GO_PKGS=./internal/...  packages whose Go benchmarks run
#   BENCH_APPROVALS=1000        request zips approved by flare_request_approvals
#                               (made first by bench/makerequests; 0 skips)
#
# make bench-agent (part of make bench): a real flare-agent on 127.0.0.1
# launching and attesting the busybox guest (agent/e2e benchmarks); writes
# its own section of bench/results.md.
#   BENCH_AGENT_N=10            launches and attestations averaged
#
# make bench-dashboard (part of make bench): flare-dashboard (SQLite) and
# NVFlare 2.9.0's Flask Dashboard (build/venv-2.9.0) on 127.0.0.1 under the
# same load in the same run (dashboard/load_test.go, BenchmarkDashboardLoad):
# sign-ups, logins, site registrations, approvals, then kit downloads all at
# once; p50/p99 and errors per phase into the Dashboard section of
# bench/results.md. A few minutes. TestLoadSmoke (in make test) runs the same
# driver at 20/10/10 and checks errors and kit contents, not timings.
#   BENCH_DASHBOARD_USERS=1000 BENCH_DASHBOARD_SITES=500
#   BENCH_DASHBOARD_DOWNLOADS=200 BENCH_DASHBOARD_CONCURRENCY=50
#   BENCH_DASHBOARD_KEY_POOL=32  ours' --key-pool (from the environment; default flare-dashboard's)

BENCH_SIZES       ?= 10,100,1000
BENCH_PARALLELISM ?= 4
BENCH_SWEEP       ?= 2,4,10,20
BENCH_SWEEP_SIZE  ?= 100
BENCH_PER_RESOURCE_SIZES ?= 100,1000
BENCH_GO_TIME     ?= 3s
BENCH_GO_PKGS     ?= ./internal/...
BENCH_APPROVALS   ?= 1000
BENCH_RC          := $(BUILD)/bench.tfrc
BENCH_GO_OUT      := $(BUILD)/bench-go.txt
BENCH_AGENT_N     ?= 10
BENCH_AGENT_OUT   := $(BUILD)/bench-agent.txt

BENCH_DASHBOARD_OUT := $(BUILD)/bench-dashboard.txt

.PHONY: bench bench-go bench-agent bench-dashboard

bench-dashboard: dashboard-deps $(BUILD)/venv-2.9.0/.interop-tools.stamp
	@mkdir -p $(BUILD) bench
	set -o pipefail; FLARE_REQUIRE_NVFLARE=1 FLARE_BENCH_DASHBOARD_OUT=$(CURDIR)/bench/results.md \
	    $(GO) test -count=1 -run '^$$' -bench BenchmarkDashboardLoad -benchtime 1x -timeout 60m ./dashboard/ | tee $(BENCH_DASHBOARD_OUT)

bench-go:
	@mkdir -p $(BUILD)
	$(GO) test -p 1 -run '^$$' -bench . -benchmem -benchtime=$(BENCH_GO_TIME) $(BENCH_GO_PKGS) | tee $(BENCH_GO_OUT)

bench-agent: agent-e2e-deps
	@mkdir -p $(BUILD) bench
	set -o pipefail; $(GO) test -run '^$$' -bench BenchmarkAgent -benchtime $(BENCH_AGENT_N)x -timeout 20m ./agent/e2e/ | tee $(BENCH_AGENT_OUT)
	python3 scripts/agent-bench.py --bench $(BENCH_AGENT_OUT) --out bench/results.md \
	    --qemu "$$(qemu-system-x86_64 --version | head -1)"

bench: build terraform interop-venv-newest bench-go bench-agent bench-dashboard
	@printf 'provider_installation {\n  dev_overrides {\n    "flarekit/flare" = "%s"\n  }\n  direct {}\n}\n' "$(BIN)" > $(BENCH_RC)
	@mkdir -p bench
	$(INTEROP_PY) scripts/provision-bench.py --terraform $(TERRAFORM) --tfrc $(BENCH_RC) \
	    --main-tf examples/quickstart/main.tf --go-bench $(BENCH_GO_OUT) --out bench/results.md \
	    --sizes $(BENCH_SIZES) --parallelism $(BENCH_PARALLELISM) \
	    --sweep-size $(BENCH_SWEEP_SIZE) --sweep '$(BENCH_SWEEP)' \
	    --per-resource-sizes '$(BENCH_PER_RESOURCE_SIZES)' --go-pkgs '$(BENCH_GO_PKGS)' \
	    --approvals $(BENCH_APPROVALS)
