#!/usr/bin/env bash
# release.sh — the provider in the Terraform registry's release layout, a
# filesystem mirror Terraform and OpenTofu install it from, and flare-agent
# as a Debian package. Called by `make release` (mk/release.mk).
#
#   VERSION=0.1.0 OUT=build/release PLATFORMS="linux_amd64 ..." \
#   DEB_ARCHES="amd64 arm64" scripts/release.sh
#
# Writes to OUT (emptied first):
#   terraform-provider-flare_<V>_<os>_<arch>.zip   terraform-provider-flare_v<V>[.exe], and flare-init
#                                                 (the CVM guest's /init, linux/amd64 whatever the
#                                                 platform: flare_cvm_kit's guest_init default is
#                                                 the flare-init beside the provider)
#   terraform-provider-flare_<V>_manifest.json     terraform-registry-manifest.json
#   terraform-provider-flare_<V>_SHA256SUMS        of the zips and the manifest
#   terraform-provider-flare_<V>_SHA256SUMS.sig    detached binary GPG signature
#   release-signing-key.asc                        the public key that made it
#   mirror/<host>/flarekit/flare/terraform-provider-flare_<V>_<os>_<arch>.zip
#                                                  packed filesystem-mirror layout, for
#                                                  registry.terraform.io and registry.opentofu.org
#   flare-agent_<V>_<arch>.deb                     per DEB_ARCHES (linux)
#
# The signing key: RELEASE_GPG_KEY (a key id in the caller's keyring,
# GNUPGHOME as usual), or else a throwaway RSA key made in a temporary
# GNUPGHOME and deleted afterwards (its public key is still exported, so the
# signature can be checked; it says nothing about who made the release).
# Builds are CGO_ENABLED=0 -trimpath; file times in zips and the package
# are SOURCE_DATE_EPOCH (default: the last commit's time).
set -euo pipefail

: "${VERSION:?VERSION is required (semver without v, e.g. 0.1.0)}"
: "${OUT:?OUT is required}"
PLATFORMS=${PLATFORMS:-"linux_amd64 linux_arm64 darwin_amd64 darwin_arm64 windows_amd64"}
DEB_ARCHES=${DEB_ARCHES-"amd64 arm64"}
GO=${GO:-go}
NAME=terraform-provider-flare
MODULE=github.com/flarekit/terraform-provider-flare
HOSTS=${MIRROR_HOSTS:-"registry.terraform.io registry.opentofu.org"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

if ! [[ $VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]]; then
	echo "release.sh: VERSION $VERSION is not a semantic version (e.g. 0.1.0)" >&2
	exit 1
fi
for tool in zip sha256sum gpg dpkg-deb; do
	if [ "$tool" = dpkg-deb ] && [ -z "$DEB_ARCHES" ]; then continue; fi
	command -v "$tool" >/dev/null || { echo "release.sh: $tool is missing (make release-deps installs it)" >&2; exit 1; }
done
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)}
stamp() { touch -h -d "@$SOURCE_DATE_EPOCH" "$@"; }

OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
rm -rf "${OUT:?}"/* "${OUT:?}"/.stage
STAGE=$OUT/.stage
mkdir -p "$STAGE"
trap 'rm -rf "$STAGE"' EXIT

# --- the provider, one zip per platform ------------------------------------
# flare-init runs inside the CVM (SEV-SNP: linux/amd64 always), so every
# platform's zip carries the same one.
(cd "$ROOT" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $GO build -trimpath -buildvcs=false \
	-ldflags "-s -w -X main.version=$VERSION" -o "$STAGE/flare-init" ./agent/cmd/flare-init)
stamp "$STAGE/flare-init"
for p in $PLATFORMS; do
	os=${p%_*} arch=${p#*_}
	exe=${NAME}_v${VERSION}
	[ "$os" = windows ] && exe=$exe.exe
	t0=$(date +%s)
	mkdir -p "$STAGE/$p"
	(cd "$ROOT" && CGO_ENABLED=0 GOOS=$os GOARCH=$arch $GO build -trimpath -buildvcs=false \
		-ldflags "-s -w -X main.version=$VERSION" -o "$STAGE/$p/$exe" .)
	stamp "$STAGE/$p/$exe"
	cp -p "$STAGE/flare-init" "$STAGE/$p/flare-init"
	(cd "$STAGE/$p" && zip -q -X "$OUT/${NAME}_${VERSION}_${p}.zip" "$exe" flare-init)
	echo "release: ${NAME}_${VERSION}_${p}.zip ($(( $(date +%s) - t0 ))s)"
done
cp "$ROOT/terraform-registry-manifest.json" "$OUT/${NAME}_${VERSION}_manifest.json"

# --- checksums and their signature -----------------------------------------
(cd "$OUT" && sha256sum ${NAME}_${VERSION}_*.zip ${NAME}_${VERSION}_manifest.json > ${NAME}_${VERSION}_SHA256SUMS)
SUMS=$OUT/${NAME}_${VERSION}_SHA256SUMS
if [ -n "${RELEASE_GPG_KEY:-}" ]; then
	gpg --batch --yes --local-user "$RELEASE_GPG_KEY" --detach-sign --output "$SUMS.sig" "$SUMS"
	gpg --batch --armor --export "$RELEASE_GPG_KEY" > "$OUT/release-signing-key.asc"
else
	GNUPGHOME=$(mktemp -d "${TMPDIR:-/tmp}/flare-release-gpg.XXXXXX")
	export GNUPGHOME
	trap 'rm -rf "$STAGE"; gpgconf --kill all >/dev/null 2>&1 || true; rm -rf "$GNUPGHOME"' EXIT
	gpg --batch --quiet --passphrase '' --quick-gen-key \
		"terraform-provider-flare throwaway release key <release@flarekit.invalid>" rsa3072 sign 1y 2>/dev/null
	gpg --batch --quiet --detach-sign --output "$SUMS.sig" "$SUMS"
	gpg --batch --armor --export > "$OUT/release-signing-key.asc"
	echo "release: signed with a throwaway key (set RELEASE_GPG_KEY to sign with yours)"
fi
gpg --batch --quiet --verify "$SUMS.sig" "$SUMS" 2>/dev/null

# --- filesystem mirror (packed layout: the registry's own zips) -------------
for host in $HOSTS; do
	d=$OUT/mirror/$host/flarekit/flare
	mkdir -p "$d"
	for p in $PLATFORMS; do
		ln "$OUT/${NAME}_${VERSION}_${p}.zip" "$d/" 2>/dev/null || cp "$OUT/${NAME}_${VERSION}_${p}.zip" "$d/"
	done
done

# --- flare-agent Debian packages ----------------------------------------------
for arch in $DEB_ARCHES; do
	t0=$(date +%s)
	root=$STAGE/deb-$arch
	rm -rf "$root"
	install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/systemd/system" "$root/usr/lib/udev/rules.d" \
		"$root/usr/share/doc/flare-agent/examples"
	(cd "$ROOT" && CGO_ENABLED=0 GOOS=linux GOARCH=$arch $GO build -trimpath -buildvcs=false \
		-ldflags "-s -w -X $MODULE/agent/server.Version=$VERSION" -o "$root/usr/bin/flare-agent" ./agent/cmd/flare-agent)
	chmod 0755 "$root/usr/bin/flare-agent"
	install -m 0644 "$ROOT/examples/agent/flare-agent.service" "$root/usr/lib/systemd/system/flare-agent.service"
	install -m 0644 "$ROOT/agent/packaging/deb/60-flare-agent.rules" "$root/usr/lib/udev/rules.d/60-flare-agent.rules"
	install -m 0644 "$ROOT/examples/agent/agent.yaml" "$root/usr/share/doc/flare-agent/examples/agent.yaml"
	install -m 0644 "$ROOT/agent/README.md" "$root/usr/share/doc/flare-agent/README.md"
	for s in postinst prerm postrm; do
		install -m 0755 "$ROOT/agent/packaging/deb/$s" "$root/DEBIAN/$s"
	done
	size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
	cat > "$root/DEBIAN/control" <<EOF
Package: flare-agent
Version: $VERSION
Architecture: $arch
Maintainer: flarekit <release@flarekit.invalid>
Installed-Size: $size
Depends: adduser
Recommends: qemu-system-x86 (>= 1:7.2), ovmf
Section: admin
Priority: optional
Homepage: https://github.com/flarekit/terraform-provider-flare
Description: launch NVFlare confidential VM kits with QEMU and verify their attestation
 flare-agent is the on-host daemon of an NVIDIA FLARE site that runs in
 confidential VMs: it launches CVM kits made by the Terraform provider
 flarekit/flare with QEMU (SEV-SNP, or a simulated mode for tests), keeps
 them running across its own restarts and serves their attestation reports
 over mutual TLS. It runs as the unprivileged flare-agent user with QEMU
 under a seccomp sandbox (systemd unit flare-agent.service).
EOF
	find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	dpkg-deb --root-owner-group -Zxz --build "$root" "$OUT/flare-agent_${VERSION}_${arch}.deb" >/dev/null
	echo "release: flare-agent_${VERSION}_${arch}.deb ($(( $(date +%s) - t0 ))s)"
done

echo "release: $OUT"
(cd "$OUT" && ls -1 | grep -v '^mirror$' | sed 's/^/  /')
