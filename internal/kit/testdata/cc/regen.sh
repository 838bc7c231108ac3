#!/usr/bin/env bash
# Regenerates lines/<line>/ here from `nvflare provision` of project.yml
# (build/venv-<version> of each line): the file list of every kit and the
# JSON files of local/ that CC changes. TestCCMatchesNVFlare compares ours with them.
set -euo pipefail; shopt -s nullglob
here=$(cd "$(dirname "$0")" && pwd); repo=$(cd "$here/../../../.." && pwd)
for v in 2.7.3 2.8.3 2.9.0; do
  line=${v%.*}; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  cp "$here"/project.yml "$here"/cc_*.yml "$tmp"/
  (cd "$tmp" && HOME="$tmp" "$repo/build/venv-$v/bin/nvflare" provision -p project.yml >/dev/null)
  prod="$tmp/workspace/ccproj/prod_00"; out="$here/lines/$line"
  rm -rf "$out"; mkdir -p "$out"
  for p in server1 site-1 site-2; do
    mkdir -p "$out/$p"
    (cd "$prod/$p" && find . -type f | sed 's#^\./##' | sort) > "$out/$p/files.txt"
    for f in "$prod/$p"/local/*.json "$prod/$p"/local/*.json.default; do
      [ "$(basename "$f")" = signature.json ] && continue
      cp "$f" "$out/$p/"
    done
  done
  rm -rf "$tmp"; trap - EXIT
done
