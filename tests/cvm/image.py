"""Builds the CVM end-to-end test's workload image without a Docker daemon:
a `docker save` archive (one layer) holding this host's Python, the
NVFlare venv the test runs from, bash and busybox, with the entrypoint
NVFlare's CC images use (/user_config/nvflare/startup/sub_start.sh).

The files are this machine's own (Debian's python3.11 and the shared
libraries ldd names), so the image runs on the same architecture only;
that is all the test needs.

    python image.py OUT.tar [--entrypoint ARG ...]
"""

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

VENV_IN_IMAGE = "/opt/nvflare-venv"
# Big parts of the standard library a federation never imports.
STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "__pycache__",
               "site-packages", "dist-packages", "config-3.11-x86_64-linux-gnu", "config-3.12-x86_64-linux-gnu"}
SITE_SKIP = {"pip", "setuptools", "_pytest", "pytest", "__pycache__"}
BUSYBOX_APPLETS = ["sh", "env", "cat", "cp", "rm", "ln", "mkdir", "dirname", "basename", "sleep", "chmod", "pwd",
                   "echo", "kill", "ps", "grep", "sed", "awk", "ls", "mv", "touch", "head", "tail", "date", "id",
                   "readlink", "realpath", "find", "sort", "tr", "cut", "wc", "uname", "hostname", "true", "false",
                   "test", "[", "printf", "nproc", "df", "free"]


def ldd(path: str) -> set:
    out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    libs = set()
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts:
            i = parts.index("=>")
            if i + 1 < len(parts) and parts[i + 1].startswith("/"):
                libs.add(parts[i + 1])
        elif parts and parts[0].startswith("/"):
            libs.add(parts[0])  # the dynamic loader
    return libs


class Layer:
    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.names = set()

    def _info(self, name, kind, mode, size=0, link=""):
        ti = tarfile.TarInfo(name.lstrip("/"))
        ti.type, ti.mode, ti.size, ti.linkname, ti.mtime = kind, mode, size, link, 1700000000
        return ti

    def dirs(self, name):
        parts = name.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.names:
                self.names.add(d)
                self.tar.addfile(self._info(d, tarfile.DIRTYPE, 0o755))

    def dir(self, name, mode=0o755):
        self.dirs(name + "/x")
        n = name.strip("/")
        if n not in self.names:
            self.names.add(n)
            self.tar.addfile(self._info(n, tarfile.DIRTYPE, mode))

    def data(self, name, data: bytes, mode=0o644):
        self.dirs(name)
        self.names.add(name.strip("/"))
        self.tar.addfile(self._info(name, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))

    def symlink(self, name, target):
        self.dirs(name)
        if name.strip("/") in self.names:
            return
        self.names.add(name.strip("/"))
        self.tar.addfile(self._info(name, tarfile.SYMTYPE, 0o777, link=target))

    def file(self, src, name=None, mode=None):
        name = name or src
        if name.strip("/") in self.names:
            return
        st = os.lstat(src)
        if os.path.islink(src):
            self.symlink(name, os.readlink(src))
            return
        with open(src, "rb") as f:
            self.data(name, f.read(), mode if mode is not None else (st.st_mode & 0o7777))

    def tree(self, src, dst, skip=()):
        for root, dirs, files in os.walk(src):
            dirs[:] = sorted(d for d in dirs if d not in skip)
            rel = os.path.relpath(root, src)
            base = dst if rel == "." else os.path.join(dst, rel)
            self.dir(base)
            for f in sorted(files):
                if f.endswith(".pyc"):
                    continue
                self.file(os.path.join(root, f), os.path.join(base, f))
            for d in dirs:
                p = os.path.join(root, d)
                if os.path.islink(p):
                    self.symlink(os.path.join(base, d), os.readlink(p))

    def close(self) -> bytes:
        self.tar.close()
        return self.buf.getvalue()


def build(out: Path, venv: Path, entrypoint: list, env: list) -> None:
    layer = Layer()
    for d, mode in (("tmp", 0o1777), ("root", 0o700), ("etc", 0o755), ("vault", 0o755), ("applog", 0o755),
                    ("user_config", 0o755), ("user_data", 0o755), ("opt/certs", 0o755)):
        layer.dir(d, mode)
    layer.data("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    layer.data("etc/group", b"root:x:0:\n")

    python = os.path.realpath(sys.executable)  # /usr/bin/python3.11
    stdlib = sysconfig.get_paths()["stdlib"]  # /usr/lib/python3.11
    binaries = [python, shutil.which("bash"), "/bin/busybox"]
    libs = set()
    for b in binaries:
        layer.file(b)
        libs |= ldd(b)
    layer.tree(stdlib, stdlib, STDLIB_SKIP)
    for so in Path(stdlib, "lib-dynload").glob("*.so"):
        libs |= ldd(str(so))
    site = Path(venv, "lib", Path(stdlib).name, "site-packages")
    layer.tree(str(site), f"{VENV_IN_IMAGE}/lib/{Path(stdlib).name}/site-packages", SITE_SKIP)
    for so in site.rglob("*.so*"):
        libs |= {l for l in ldd(str(so)) if not l.startswith(str(site))}
    for lib in sorted(libs):
        real = os.path.realpath(lib)
        layer.file(real)
        if real != lib:
            layer.symlink(lib, real)
    for name in ("python3", "python"):
        layer.symlink(f"/usr/bin/{name}", python)
        layer.symlink(f"{VENV_IN_IMAGE}/bin/{name}", python)
    layer.data(f"{VENV_IN_IMAGE}/pyvenv.cfg", f"home = {os.path.dirname(python)}\ninclude-system-site-packages = false\n".encode())
    for a in BUSYBOX_APPLETS:
        if a != "sh":
            layer.symlink(f"/bin/{a}", "/bin/busybox")
        layer.symlink(f"/usr/bin/{a}", "/bin/busybox")
    layer.symlink("/bin/sh", "/bin/busybox")
    data = layer.close()

    diff_id = hashlib.sha256(data).hexdigest()
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {
        "Entrypoint": entrypoint, "WorkingDir": "/",
        "Env": [f"PATH={VENV_IN_IMAGE}/bin:/usr/bin:/bin", f"VIRTUAL_ENV={VENV_IN_IMAGE}", "PYTHONUNBUFFERED=1", "HOME=/root"] + env},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff_id]}}, sort_keys=True).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": ["flare/cvm-nvflare:e2e"], "Layers": [diff_id + "/layer.tar"]}]).encode()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
        for name, body in ((diff_id + "/layer.tar", data), (cfg_name, cfg), ("manifest.json", manifest)):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(body), 1700000000, 0o644
            t.addfile(ti, io.BytesIO(body))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--venv", default=sys.prefix)
    ap.add_argument("--entrypoint", nargs=argparse.REMAINDER, default=["/user_config/nvflare/startup/sub_start.sh", "--once"])
    ap.add_argument("--env", action="append", default=[])
    a = ap.parse_args()
    build(Path(a.out), Path(a.venv), a.entrypoint, a.env)
    print(f"{a.out}: {os.path.getsize(a.out) >> 20} MiB")


if __name__ == "__main__":
    main()
