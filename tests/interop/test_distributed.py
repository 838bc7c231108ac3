"""NVFlare 2.9 distributed provisioning with Terraform as the approver.

A new client site runs `nvflare cert request` (its key never leaves it);
`terraform apply` makes the project, the server and its kit, and approves the
request with flare_request_approval; the site runs `nvflare package` on the
signed zip with the root fingerprint from Terraform; the server (Terraform's
kit) and the packaged client start on 127.0.0.1 and the client registers.

Environment:
  FLARE_INTEROP_NVFLARE    the venv's NVFlare version; the test runs on 2.9.x only
  FLARE_INTEROP_TERRAFORM  terraform binary
  FLARE_INTEROP_TFRC       a TF_CLI_CONFIG_FILE whose dev_overrides point
                           flarekit/flare at the provider under test

Run: build/venv-2.9.0/bin/python -m pytest -c tests/interop/pytest.ini tests/interop/test_distributed.py
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import Timeout, describe, kill_all, kit_env, launch, port_open, processes_under, tail, wait_for  # noqa: E402

PROJECT = "dist"
SITE = "site-d"
ORG = "nvidia"
START_TIMEOUT = 120

pytestmark = pytest.mark.skipif(
    not os.environ.get("FLARE_INTEROP_NVFLARE", "").startswith("2.9"),
    reason="distributed provisioning (nvflare cert request/approve, nvflare package) is NVFlare 2.9's; set FLARE_INTEROP_NVFLARE=2.9.x",
)


def _need(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set")
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nvflare(*args, cwd: Path, home: Path, check: bool = True) -> subprocess.CompletedProcess:
    """The venv's `nvflare` CLI with its own HOME (its audit records)."""
    env = kit_env()
    env["HOME"] = str(home)
    exe = Path(sys.executable).parent / "nvflare"
    p = subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"nvflare {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def terraform(tf_dir: Path, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["TF_CLI_CONFIG_FILE"] = _need("FLARE_INTEROP_TFRC")
    env["TF_IN_AUTOMATION"] = "1"
    p = subprocess.run([_need("FLARE_INTEROP_TERRAFORM"), *args], cwd=tf_dir, env=env, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise AssertionError(f"terraform {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


CONFIG = """
terraform {
  required_providers {
    flare = { source = "flarekit/flare" }
  }
}

resource "flare_project" "p" {
  name = %(project)s
  ca   = { dir = "ca" }
}

# A kit from `nvflare package` knows the server by the host it dials, so
# the server is named after its host.
resource "flare_server" "server1" {
  project_id     = flare_project.p.id
  name           = "localhost"
  org            = "nvidia"
  fed_learn_port = %(fl)d
  admin_port     = %(admin)d
}

resource "flare_startup_kit" "server" {
  participant = flare_server.server1.descriptor
  output_dir  = "kits"
}

resource "flare_request_approval" "site" {
  project_id       = flare_project.p.id
  server           = flare_server.server1.descriptor
  request_zip      = %(request_zip)s
  participant_type = "client"
  output_dir       = "approved"
}

output "signed_zip" { value = flare_request_approval.site.signed_zip }
output "fingerprint" { value = flare_request_approval.site.rootca_fingerprint_sha256 }
output "server_kit" { value = flare_startup_kit.server.kit_dir }
"""


@pytest.fixture
def run(tmp_path):
    yield tmp_path
    left = processes_under(tmp_path)
    if left:
        print(f"teardown: ending processes left behind:\n{describe(left)}")
        kill_all(left)


def test_request_approve_package_register(run: Path):
    fl, admin = free_port(), free_port()
    while admin == fl:
        admin = free_port()

    # 1. The site: a participant definition and `nvflare cert request`.
    site = run / "site"
    site.mkdir()
    (site / "site.yaml").write_text(f"name: {PROJECT}\nparticipants:\n  - name: {SITE}\n    org: {ORG}\n    type: client\n")
    nvflare("cert", "request", "--participant", "site.yaml", "--out", str(site / "req"), cwd=site, home=site / "home")
    request_zip = site / "req" / f"{SITE}.request.zip"
    assert request_zip.is_file()
    assert (site / "req" / f"{SITE}.key").is_file(), "the site's key is where nvflare cert request left it"

    # 2. The project admin: terraform apply approves the request.
    tf = run / "tf"
    tf.mkdir()
    (tf / "main.tf").write_text(CONFIG % {
        "project": json.dumps(PROJECT), "fl": fl, "admin": admin, "request_zip": json.dumps(str(request_zip)),
    })
    terraform(tf, "apply", "-auto-approve", "-input=false", "-no-color")
    outputs = json.loads(terraform(tf, "output", "-json").stdout)
    signed_zip = Path(outputs["signed_zip"]["value"])
    if not signed_zip.is_absolute():
        signed_zip = tf / signed_zip
    fingerprint = outputs["fingerprint"]["value"]
    server_kit = Path(outputs["server_kit"]["value"])
    if not server_kit.is_absolute():
        server_kit = tf / server_kit
    assert signed_zip.is_file()
    assert b"PRIVATE KEY" not in signed_zip.read_bytes()
    state = (tf / "terraform.tfstate").read_text()
    assert "PRIVATE KEY" not in state
    assert not (tf / "ca" / "participants" / f"{SITE}.key").exists(), "the provider wrote a key for the site"

    # 3. The site packages the signed zip. A wrong fingerprint is refused.
    wrong = "SHA256:" + ":".join(["00"] * 32)
    bad = nvflare("package", str(signed_zip), "--fingerprint", wrong, "-w", str(site / "ws-bad"),
                  "--request-dir", str(site / "req"), cwd=site, home=site / "home", check=False)
    assert bad.returncode != 0 and "FINGERPRINT" in (bad.stdout + bad.stderr).upper(), bad.stdout + bad.stderr
    nvflare("package", str(signed_zip), "--fingerprint", fingerprint, "-w", str(site / "ws"),
            "--request-dir", str(site / "req"), cwd=site, home=site / "home")
    client_kit = site / "ws" / PROJECT / "prod_00" / SITE
    fed_client = json.loads((client_kit / "startup" / "fed_client.json").read_text())
    assert fed_client["servers"][0]["service"]["target"] == f"localhost:{fl}", fed_client

    # 4. Server from Terraform's kit, client from the packaged kit, on 127.0.0.1.
    local = server_kit / "local"
    text = (local / "resources.json.default").read_text()
    (local / "resources.json").write_text(text.replace("/tmp/nvflare/", str(run / "server-storage") + "/"))
    logs = run / "logs"
    launch([str(server_kit / "startup" / "start.sh")], logs / "server.out", cwd=server_kit)
    wait_for("the server to listen on its fed_learn and admin ports", lambda: port_open(fl) and port_open(admin),
             START_TIMEOUT, detail=lambda: tail(logs / "server.out") + "\n" + tail(server_kit / "log.txt"))
    launch([str(client_kit / "startup" / "start.sh")], logs / "client.out", cwd=client_kit)

    def registered():
        server_log = (server_kit / "log.txt").read_text(errors="replace") if (server_kit / "log.txt").exists() else ""
        client_log = (client_kit / "log.txt").read_text(errors="replace") if (client_kit / "log.txt").exists() else ""
        return f"New client {SITE}@" in server_log and f"Successfully registered client:{SITE}" in client_log

    wait_for(f"{SITE} to register with the server", registered, START_TIMEOUT, interval=1,
             detail=lambda: "\n".join([tail(logs / "server.out"), tail(server_kit / "log.txt"),
                                       tail(logs / "client.out"), tail(client_kit / "log.txt")]))
    print(f"{SITE} registered:", [line for line in (server_kit / "log.txt").read_text().splitlines() if f"New client {SITE}@" in line][0])

    # 5. Stop: the kits' own stop scripts, then SIGTERM/SIGKILL for what is left
    # (start.sh's restart loops may outlive a slow shutdown); nothing may remain.
    for kit in (client_kit, server_kit):
        subprocess.run([str(kit / "startup" / "stop_fl.sh"), "-y"], cwd=kit, env=kit_env(), capture_output=True, timeout=60)
    try:
        wait_for("the server and client to exit", lambda: not processes_under(run), 30)
    except Timeout:
        kill_all(processes_under(run))
    assert not processes_under(run), describe(processes_under(run))
