#!/usr/bin/env bash
# Fetches the CVM guest kernel into <dir> without installing it on the host:
# Debian's 6.12 cloud kernel from bookworm-security (Debian's 6.1 cloud
# kernel has no sev-guest driver; 6.12 has sev-guest, configfs-tsm,
# dm-crypt and nf_tables as modules). Unpacks the .deb with dpkg-deb and
# runs depmod, so <dir>/boot/vmlinuz-<ver> and <dir>/lib/modules/<ver>
# (with modules.dep) are what flare_cvm_kit's kernel and kernel_modules
# take. Prints the vmlinuz path. Idempotent.
#
#   scripts/guest-kernel.sh <dir> [package]   package: default linux-image-6.12-cloud-amd64
set -euo pipefail
dir=${1:?usage: guest-kernel.sh <dir> [package]}
meta=${2:-linux-image-6.12-cloud-amd64}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if ls "$dir"/boot/vmlinuz-* >/dev/null 2>&1 && ls "$dir"/lib/modules/*/modules.dep >/dev/null 2>&1; then
  ls "$dir"/boot/vmlinuz-* | sort | tail -n1
  exit 0
fi
sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
# The meta package depends on the versioned image package.
pkg=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ]; then
  $sudo apt-get update -q >&2
  pkg=$(apt-cache depends "$meta" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
[ -n "$pkg" ] || { echo "guest-kernel: apt knows no $meta (bookworm-security in sources.list?)" >&2; exit 1; }
command -v depmod >/dev/null || PATH=$PATH:/usr/sbin:/sbin
command -v depmod >/dev/null || { echo "guest-kernel: depmod missing (apt-get install kmod)" >&2; exit 1; }
tmp=$(mktemp -d "$dir/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# apt-get download writes to the current directory; _apt cannot write a
# root-owned mktemp dir, hence the chmod.
chmod 0777 "$tmp"
(cd "$tmp" && apt-get download -q "$pkg" >&2)
dpkg-deb -x "$tmp"/*.deb "$tmp/root"
ver=$(ls "$tmp/root/lib/modules" | head -n1)
depmod -b "$tmp/root" "$ver"
mkdir -p "$dir/boot" "$dir/lib/modules"
mv "$tmp/root/lib/modules/$ver" "$dir/lib/modules/$ver"
mv "$tmp/root/boot/vmlinuz-$ver" "$dir/boot/vmlinuz-$ver"
cp "$tmp/root/boot/config-$ver" "$dir/boot/config-$ver"
echo "$dir/boot/vmlinuz-$ver"
