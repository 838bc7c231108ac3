#!/usr/bin/env bash
# Builds OpenTofu from the Go module proxy for machines without terraform.
# usage: build-tofu.sh <version> <output binary>
set -euo pipefail
version=$1 out=$2
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
export GOMODCACHE=${GOMODCACHE:-$(go env GOMODCACHE)}
go mod download -json "github.com/opentofu/opentofu@${version}" > "$work/mod.json"
src=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["Dir"])' "$work/mod.json")
cp -r "$src" "$work/src"
chmod -R u+w "$work/src"
(cd "$work/src" && CGO_ENABLED=0 go build -o "$out" ./cmd/tofu)
echo "built $out"
