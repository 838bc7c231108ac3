# Go native fuzzing of the parsers untrusted input reaches.
#
#   make fuzz            every target below for FUZZTIME each, one after the
#                        other (go test -fuzz takes one target at a time)
#   make fuzz-<Name>     one target, e.g. make fuzz-FuzzUnpack FUZZTIME=5m
#   make fuzz-list       the targets and their packages
#
# The targets and what feeds them:
#   FuzzUnpack            agent/launch     an uploaded kit tar.gz (managing admins)
#   FuzzParseManifest     agent/launch     launch.json of a kit (path launch or upload)
#   FuzzVerifyEvidence    internal/attest  SNP report + certificate table (the guest)
#   FuzzQMPStream         internal/qmp     the QMP greeting and stream (QEMU)
#   FuzzDockerArchive     internal/cvm     docker save / OCI archive (image supplier)
#   FuzzParseFile         internal/project project.yml (flare_project_config)
#   FuzzParseRequestZip   internal/approve NVFlare 2.9 request zip (a site)
#   FuzzParseRequestParts internal/approve its members, re-zipped with matching hashes
#   FuzzOpen              internal/luks    the LUKS1/LUKS2 header of the encrypted root (the host)
#
# Seeds: each target's f.Add calls plus testdata/fuzz/<Name>/ beside it. A
# crash the fuzzer finds is written there by go test; fix the bug and keep
# the file: plain `go test` (and so `make test`) runs every seed, so it
# stays fixed. FUZZTIME is a go test -fuzztime (20s, 1m, 10000x),
# FUZZMINTIME its -fuzzminimizetime;
# FUZZ_PARALLEL sets -parallel (default: GOMAXPROCS).
#
# Included by GNUmakefile (GO, SHELL=bash come from there).

GO            ?= go
FUZZTIME      ?= 20s
# FUZZMINTIME is -fuzzminimizetime. go test's default minimizes every new
# interesting input for up to 60s, byte by byte, and does not count those
# runs: on inputs of kilobytes (a kit's tar) a 20s run would do little
# else. 0 turns minimizing off (a crasher is kept as found); use e.g.
# FUZZMINTIME=60s to get a small reproducer of a crash.
FUZZMINTIME   ?= 0
FUZZ_PARALLEL ?=
FUZZ_TARGETS  := \
	agent/launch:FuzzUnpack \
	agent/launch:FuzzParseManifest \
	internal/attest:FuzzVerifyEvidence \
	internal/qmp:FuzzQMPStream \
	internal/cvm:FuzzDockerArchive \
	internal/project:FuzzParseFile \
	internal/approve:FuzzParseRequestZip \
	internal/approve:FuzzParseRequestParts \
	internal/luks:FuzzOpen

FUZZ_NAMES := $(foreach t,$(FUZZ_TARGETS),$(lastword $(subst :, ,$(t))))

.PHONY: fuzz fuzz-list $(addprefix fuzz-,$(FUZZ_NAMES))

# One recipe, so the targets run one at a time even under make -j.
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "== $$name ($$pkg, $(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINTIME) $(if $(FUZZ_PARALLEL),-parallel $(FUZZ_PARALLEL)) ./$$pkg; \
	done

fuzz-list:
	@$(foreach t,$(FUZZ_TARGETS),echo "$(lastword $(subst :, ,$(t)))	./$(firstword $(subst :, ,$(t)))";)

# One rule per target.
define fuzz_rule
fuzz-$(lastword $(subst :, ,$(1))):
	$$(GO) test -run '^$$$$' -fuzz '^$(lastword $(subst :, ,$(1)))$$$$' -fuzztime $$(FUZZTIME) -fuzzminimizetime $$(FUZZMINTIME) $$(if $$(FUZZ_PARALLEL),-parallel $$(FUZZ_PARALLEL)) ./$(firstword $(subst :, ,$(1)))
endef
$(foreach t,$(FUZZ_TARGETS),$(eval $(call fuzz_rule,$(t))))
