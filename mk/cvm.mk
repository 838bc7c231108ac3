# CVM kit tests (internal/cvm): drive images made with Debian tools.
#
#   make cvm-deps   apt-get install what the CVM kit and its tests use:
#                   e2fsprogs (mkfs.ext4, debugfs, e2fsck), qemu-utils
#                   (qemu-img), cryptsetup-bin (luksDump in the tests), and
#                   for launch and measurement tests ovmf,
#                   linux-image-cloud-amd64, busybox-static.
#                   Uses sudo when not root; skips apt when all are installed.
#   make cvm-test   cvm-deps, then the internal/cvm tests with the tools
#                   required (CVM_REQUIRE_TOOLS=1: missing tools fail, not
#                   skip). `make test` installs the deps and runs these
#                   tests in its own go test run with the same switch.
#
# Included by GNUmakefile (BUILD, GO, SHELL=bash come from there). Without
# the tools, `go test ./internal/cvm/...` skips the image tests and says why.

GO            ?= go
CVM_DEB_PKGS  ?= e2fsprogs qemu-utils cryptsetup-bin ovmf linux-image-cloud-amd64 busybox-static
CVM_TEST_ARGS ?= -count=1 -timeout 10m

.PHONY: cvm-deps cvm-test

test: cvm-deps
TEST_ENV += CVM_REQUIRE_TOOLS=1

cvm-deps:
	./scripts/deb-install.sh $(CVM_DEB_PKGS)

cvm-test: cvm-deps
	CVM_REQUIRE_TOOLS=1 $(GO) test $(CVM_TEST_ARGS) ./internal/cvm/...
