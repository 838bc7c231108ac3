# make release — install as users do.
#
#   make release         the provider for linux/darwin × amd64/arm64 and
#                        windows/amd64 (CGO off, -trimpath) in the Terraform
#                        registry's layout in build/release/: one
#                        terraform-provider-flare_<V>_<os>_<arch>.zip each
#                        (binary terraform-provider-flare_v<V>), _SHA256SUMS,
#                        its detached GPG signature _SHA256SUMS.sig, and
#                        _manifest.json; a filesystem mirror
#                        build/release/mirror/ (registry.terraform.io and
#                        registry.opentofu.org, packed layout); and flare-agent
#                        as Debian packages flare-agent_<V>_{amd64,arm64}.deb
#                        (binary, systemd unit, udev rule for /dev/sev,
#                        example config, the flare-agent system user made in
#                        postinst and removed on purge). scripts/release.sh
#                        does the work; about 5 minutes on 2 cores cold, less
#                        with a warm build cache.
#   make release-test    release-host, then the tests in tests/release:
#                        `terraform init` from the mirror with no
#                        dev_overrides and `apply` of examples/quickstart,
#                        the checksums, signature and zip layout, and (as
#                        root, with dpkg) dpkg -i of the package, its files,
#                        user and unit (systemd-analyze verify), probe as
#                        that user, dpkg -r and dpkg -P leaving no trace.
#   make release-host    the same release for this machine's platform only
#                        (and its Debian architecture), in build/release-host/.
#
#   RELEASE_VERSION=0.1.0        version (default: the newest v* tag, else 0.1.0)
#   RELEASE_GPG_KEY=<key id>     sign with this key from your keyring; default a
#                                throwaway key in a temporary GNUPGHOME
#   RELEASE_PLATFORMS=...        os_arch list for make release
#   RELEASE_DEB_ARCHES=...       Debian architectures for make release ('' for none)
#
# `make test` runs release-host and the tests of tests/release in its one go
# test run (RELEASE_REQUIRE=1: a missing release or dpkg fails instead of
# skipping), not the five cross builds: they take minutes and prove only
# that the code compiles for those platforms, which `make release` does.
#
# Included by GNUmakefile (BUILD, GO, TERRAFORM, SHELL=bash come from there).

GO                 ?= go
RELEASE_VERSION    ?= $(or $(patsubst v%,%,$(shell git describe --tags --match 'v[0-9]*' --abbrev=0 2>/dev/null)),0.1.0)
RELEASE_DIR        ?= $(BUILD)/release
RELEASE_HOST_DIR   ?= $(BUILD)/release-host
RELEASE_PLATFORMS  ?= linux_amd64 linux_arm64 darwin_amd64 darwin_arm64 windows_amd64
RELEASE_DEB_ARCHES ?= amd64 arm64
RELEASE_GPG_KEY    ?=
RELEASE_DEB_PKGS   ?= zip gnupg dpkg adduser systemd
RELEASE_HOST_PLATFORM := $(shell $(GO) env GOOS)_$(shell $(GO) env GOARCH)
RELEASE_HOST_DEB      := $(if $(filter linux,$(shell $(GO) env GOOS)),$(shell dpkg --print-architecture 2>/dev/null))

.PHONY: release release-host release-test release-deps

test: release-host
TEST_ENV += RELEASE_REQUIRE=1 FLARE_RELEASE_DIR=$(RELEASE_HOST_DIR) FLARE_RELEASE_VERSION=$(RELEASE_VERSION)

release-deps:
	./scripts/deb-install.sh $(RELEASE_DEB_PKGS)

release: release-deps
	VERSION=$(RELEASE_VERSION) OUT=$(RELEASE_DIR) PLATFORMS='$(RELEASE_PLATFORMS)' DEB_ARCHES='$(RELEASE_DEB_ARCHES)' \
	    RELEASE_GPG_KEY='$(RELEASE_GPG_KEY)' GO=$(GO) ./scripts/release.sh

release-host: release-deps
	VERSION=$(RELEASE_VERSION) OUT=$(RELEASE_HOST_DIR) PLATFORMS='$(RELEASE_HOST_PLATFORM)' DEB_ARCHES='$(RELEASE_HOST_DEB)' \
	    RELEASE_GPG_KEY='$(RELEASE_GPG_KEY)' GO=$(GO) ./scripts/release.sh

release-test: release-host terraform
	RELEASE_REQUIRE=1 FLARE_RELEASE_DIR=$(RELEASE_HOST_DIR) FLARE_RELEASE_VERSION=$(RELEASE_VERSION) \
	    TF_ACC_TERRAFORM_PATH=$(TERRAFORM) $(GO) test -count=1 -timeout 15m -v ./tests/release/
