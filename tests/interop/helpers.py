"""Helpers for the interop tests: the projects `make interop` applied, NVFlare's
own checks called on a kit, bounded waits and process bookkeeping."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, List, Optional

import psutil

# The project make interop applies: examples/quickstart with
# var.clients = ["site-1"], plus tests/interop/relay.tf (relay-1 and site-2
# behind it).
SERVER = "server1"
ADMIN = "admin@nvidia.com"
RELAY = "relay-1"
DIRECT_CLIENT = "site-1"  # dials the server
RELAYED_CLIENT = "site-2"  # connect_to = relay-1
CLIENTS = (DIRECT_CLIENT, RELAYED_CLIENT)
PROJECT_NAME = "quickstart"
ORG = "nvidia"
ADMIN_ROLE = "project_admin"

KIT_TYPES = {SERVER: "server", ADMIN: "admin", RELAY: "relay", **{c: "client" for c in CLIENTS}}


@dataclasses.dataclass
class Project:
    """One `terraform apply` of examples/quickstart."""

    root: Path  # the Terraform working directory
    kits: Path  # <root>/<kits_dir>
    ca_dir: Path
    outputs: dict  # `terraform output -json`

    @classmethod
    def load(cls, root: str, ca_dir: str) -> "Project":
        r = Path(root)
        outputs = json.loads((r / "outputs.json").read_text())
        return cls(root=r, kits=r / "kits", ca_dir=r / ca_dir, outputs=outputs)

    def output(self, name: str):
        return self.outputs[name]["value"]

    def kit_dirs(self) -> dict:
        """Kit directory (relative to root) by participant: the quickstart's
        output kits and relay.tf's output relay_kits."""
        return {**self.output("kits"), **self.output("relay_kits")}

    def kit(self, name: str) -> Path:
        return self.kits / name

    def root_ca(self, name: str = SERVER) -> Path:
        return self.kit(name) / "startup" / "rootCA.pem"

    def operator_root_ca(self) -> Path:
        """The operator's copy of the root certificate (flare_project's
        root_ca_pem in state), not the one a kit carries: a project that
        keeps its keys in Vault has no rootCA.pem in its CA directory."""
        p = self.root / "operator-rootCA.pem"
        if not p.exists():
            p.write_text(self.output("root_ca_pem"))
        return p


def sha256_der_of_pem(pem_path: Path) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    cert = x509.load_pem_x509_certificate(pem_path.read_bytes())
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


# --------------------------------------------------------------------------
# NVFlare's own checks


def verify_folder(folder: Path, root_ca: Path) -> bool:
    """nvflare.lighter.utils.verify_folder_signature as `nvflare.tool.verify_startup_kits` calls it."""
    from nvflare.lighter.utils import verify_folder_signature

    return verify_folder_signature(str(folder), str(root_ca), single_signer=True, signature_file="signature.json")


def runtime_startup_check(kit: Path, site_type: str) -> List[str]:
    """The check server_train/client_train run before anything else when
    secure_train is set (fed_utils.security_init): SecurityContentService over
    startup/, then _check_secure_content. Returns the files NVFlare calls "not
    secure content" (empty = the runtime would start)."""
    from nvflare.fuel.sec.security_content_service import SecurityContentService
    from nvflare.private.fed.utils import fed_utils

    # SecurityContentService is a process-wide singleton that initializes once.
    SecurityContentService.security_content_manager = None
    SecurityContentService.content_folder = None
    try:
        SecurityContentService.initialize(content_folder=str(kit / "startup"))
        return [os.path.basename(f) for f in fed_utils._check_secure_content(site_type)]
    finally:
        SecurityContentService.security_content_manager = None
        SecurityContentService.content_folder = None


def admin_config_check(kit: Path):
    """What the admin console and the FLARE API do before connecting: load
    startup/fed_admin.json through SecurityContentManager (raises ConfigError
    when it is not signed by the kit's root CA)."""
    from nvflare.apis.workspace import Workspace
    from nvflare.fuel.hci.client.config import secure_load_admin_config

    return secure_load_admin_config(Workspace(root_dir=str(kit)))


# --------------------------------------------------------------------------
# Tampering


def flip_one_byte(path: Path) -> int:
    """Changes exactly one byte of path and returns its offset.

    JSON files keep parsing (a digit is changed: "format_version": 2 -> 3), so
    NVFlare's checks see a well-formed but unsigned file rather than garbage.
    Other files get the case of one ASCII letter from the middle on swapped.
    """
    data = bytearray(path.read_bytes())
    if path.name.endswith((".json", ".json.default")):
        idx = next(i for i, b in enumerate(data) if 0x30 <= b <= 0x39)
        data[idx] = 0x30 + (data[idx] - 0x30 + 1) % 10
    else:
        idx = next(i for i in range(len(data) // 2, len(data)) if chr(data[i]).isascii() and chr(data[i]).isalpha())
        data[idx] ^= 0x20
    mode = path.stat().st_mode
    path.write_bytes(bytes(data))
    os.chmod(path, mode)
    return idx


def copy_kit(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


# --------------------------------------------------------------------------
# Waiting


class Timeout(AssertionError):
    pass


def wait_for(what: str, predicate: Callable[[], object], timeout: float, interval: float = 0.5,
              detail: Optional[Callable[[], str]] = None):
    """Polls predicate until it returns a truthy value, for at most timeout
    seconds; fails with a message naming what was awaited."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - report the last one on timeout
            last_exc = e
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout:.0f}s waiting for {what}"
            if last_exc is not None:
                msg += f" (last error: {type(last_exc).__name__}: {last_exc})"
            if detail is not None:
                msg += "\n" + detail()
            raise Timeout(msg)
        time.sleep(interval)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"--- {path}: (missing)"
    return f"--- last {min(lines, len(text))} lines of {path}:\n" + "\n".join(text[-lines:])


# --------------------------------------------------------------------------
# Processes


def kit_env() -> dict:
    """The environment a site operator would have: this venv's python3 first
    on PATH, so the kits' scripts run the pinned NVFlare."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.pop("PYTHONPATH", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def launch(argv: List[str], log: Path, cwd: Optional[Path] = None) -> subprocess.Popen:
    """Starts argv in its own session (so its whole process group can be
    found and ended), output to log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab")
    try:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=str(cwd) if cwd else None, env=kit_env(), start_new_session=True)
    finally:
        out.close()


def processes_under(root: Path) -> List[psutil.Process]:
    """Every live process whose command line or working directory is inside
    root: the kits' scripts, the NVFlare parents and their job processes."""
    root_s = str(root.resolve())
    found = []
    me = os.getpid()
    for p in psutil.process_iter(["pid", "cmdline", "cwd", "status"]):
        try:
            if p.info["pid"] == me or p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(p.info["cmdline"] or [])
            cwd = p.info["cwd"] or ""
            if root_s in cmd or cwd == root_s or cwd.startswith(root_s + os.sep):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def describe(procs: Iterable[psutil.Process]) -> str:
    out = []
    for p in procs:
        try:
            out.append(f"  pid {p.pid}: {' '.join(p.cmdline())}")
        except psutil.Error:
            out.append(f"  pid {p.pid}: (gone)")
    return "\n".join(out) or "  (none)"


def kill_all(procs: Iterable[psutil.Process], grace: float = 5.0) -> None:
    procs = list(procs)
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0
