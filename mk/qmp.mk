# QMP client tests against a real QEMU (Debian's qemu-system-x86; no guest,
# -machine none). Part of `make test`.
#
#   make qmp-deps   apt-get install qemu-system-x86 when it is missing
#   make qmp-test   the internal/qmp tests with QEMU required

.PHONY: qmp-deps qmp-test

test: qmp-test

qmp-deps:
	@command -v qemu-system-x86_64 >/dev/null || { \
	  sudo=; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends qemu-system-x86; }

qmp-test: qmp-deps
	QMP_REQUIRE_QEMU=1 $(GO) test -count=1 ./internal/qmp/...
