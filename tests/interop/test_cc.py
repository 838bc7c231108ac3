"""NVFlare's CC runtime checks from our kits, in mock mode (no SEV hardware).

NVFlare's CCManager attests every CC site to its peers: at registration
(client -> server and back), before the first job is scheduled, and every
check_frequency seconds. Its SNPAuthorizer needs /dev/sev-guest, snpguest and
AMD's key server, which this machine does not have; NVFlare ships
MockAuthorizer (namespace x-mock: a fixed token that always verifies) for
exactly this, and `nvflare provision` writes the same kit files for
compute_env `mock` as for `onprem_cvm`. So here:

1. `nvflare provision` of this line makes the reference kits of a project
   whose server and site-1 have a cc_config (compute_env mock, issuer
   MockAuthorizer) and site-2 none; `terraform apply` makes ours with
   flare_startup_kit's `cc` setting. The CC files of every kit must equal
   NVFlare's (JSON), and the kit file sets must match.
2. The server and site-1 start from our kits as host processes: CCManager
   loads on both, site-1's mock token is generated and validated by the
   server at registration and the server's by site-1, a job runs on site-1
   after the server's cross-site check passed.
3. Negative: site-2 (a kit without CC) registering with the CC server is
   refused: NVFlare's CCManager finds no CC token and shuts the federation
   down.

The kits log to /applog/ (NVFlare's CVM layout, which the kit keeps); on the
host each site gets local/log_config.json (the site override NVFlare reads
before the .default) with its logs in its own workspace instead.

Environment as test_distributed.py (FLARE_INTEROP_NVFLARE, _TERRAFORM, _TFRC).
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import describe, kill_all, kit_env, launch, port_open, processes_under, tail, verify_folder, wait_for  # noqa: E402

PROJECT = "ccmock"
MOCK = "nvflare.app_opt.confidential_computing.mock_authorizer.MockAuthorizer"
START_TIMEOUT = 120
REGISTER_TIMEOUT = 90
JOB_TIMEOUT = 180
CC_FILES = ("cc_manager__p_resources.json", "mock_authorizer__p_resources.json", "authorization.json.default",
            "log_config.json.default", "resources.json.default")


def _need(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set")
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def terraform(tf_dir: Path, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["TF_CLI_CONFIG_FILE"] = _need("FLARE_INTEROP_TFRC")
    env["TF_IN_AUTOMATION"] = "1"
    p = subprocess.run([_need("FLARE_INTEROP_TERRAFORM"), *args], cwd=tf_dir, env=env, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise AssertionError(f"terraform {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


CC_CONFIG = """compute_env: mock
cc_cpu_mechanism: amd_sev_snp
role: %(role)s
cc_issuers:
  - id: mock_authorizer
    path: %(mock)s
    token_expiration: 100
cc_attestation:
  check_frequency: 120
"""

PROJECT_YML = """api_version: 3
name: %(project)s
participants:
  - {name: server1, type: server, org: nvidia, fed_learn_port: %(fl)d, admin_port: %(admin)d, cc_config: cc_server1.yml}
  - {name: site-1, type: client, org: nvidia, cc_config: cc_site-1.yml}
  - {name: site-2, type: client, org: nvidia}
  - {name: admin@nvidia.com, type: admin, org: nvidia, role: project_admin}
builders:
  - path: nvflare.lighter.impl.workspace.WorkspaceBuilder
  - path: nvflare.lighter.impl.static_file.StaticFileBuilder
    args: {config_folder: config}
  - path: nvflare.lighter.impl.cert.CertBuilder
  - path: nvflare.lighter.cc_provision.impl.cc.CCBuilder
  - path: nvflare.lighter.impl.signature.SignatureBuilder
"""

CONFIG = """
terraform {
  required_providers {
    flare = { source = "flarekit/flare" }
  }
}

resource "flare_project" "p" {
  name            = %(project)s
  nvflare_version = %(line)s
  ca              = { dir = "ca" }
}

resource "flare_server" "server1" {
  project_id     = flare_project.p.id
  name           = "server1"
  org            = "nvidia"
  default_host   = "localhost"
  fed_learn_port = %(fl)d
  admin_port     = %(admin)d
}

resource "flare_client" "site" {
  for_each   = toset(["site-1", "site-2"])
  project_id = flare_project.p.id
  name       = each.key
  org        = "nvidia"
}

resource "flare_admin" "admin" {
  project_id = flare_project.p.id
  name       = "admin@nvidia.com"
  org        = "nvidia"
  role       = "project_admin"
}

# Mock mode (no SEV hardware): NVFlare's MockAuthorizer instead of SNPAuthorizer.
locals {
  cc = {
    issuers         = [{ id = "mock_authorizer", path = %(mock)s, token_expiration = 100 }]
    check_frequency = 120
    enabled_sites   = ["server1", "site-1"]
  }
}

resource "flare_startup_kit" "server" {
  participant = flare_server.server1.descriptor
  output_dir  = "kits"
  cc          = local.cc
}

resource "flare_startup_kit" "cc_client" {
  participant = flare_client.site["site-1"].descriptor
  server      = flare_server.server1.descriptor
  output_dir  = "kits"
  cc          = local.cc
}

resource "flare_startup_kit" "plain_client" {
  participant = flare_client.site["site-2"].descriptor
  server      = flare_server.server1.descriptor
  output_dir  = "kits"
}

resource "flare_startup_kit" "admin" {
  participant = flare_admin.admin.descriptor
  server      = flare_server.server1.descriptor
  output_dir  = "kits"
}
"""


class Fed:
    def __init__(self, root: Path, kits: Path, fl: int, admin: int):
        self.root, self.fl, self.admin = root, fl, admin
        self.kits = {}
        for name in ("server1", "site-1", "site-2", "admin@nvidia.com"):
            self.kits[name] = Path(shutil.copytree(kits / name, root / "run" / name, symlinks=True))
        self.logs = root / "logs"
        self.procs = {}
        self.session = None
        for name in ("server1", "site-1", "site-2"):
            self._host_logs(self.kits[name])
        local = self.kits["server1"] / "local"
        text = (local / "resources.json.default").read_text()
        (local / "resources.json").write_text(text.replace("/tmp/nvflare/", str(root / "server-storage") + "/"))

    @staticmethod
    def _host_logs(kit: Path):
        # local/log_config.json overrides the kit's .default (/applog/ is the
        # CVM's log drive); the kit's signed files stay as they are.
        default = kit / "local" / "log_config.json.default"
        text = default.read_text()
        if "/applog/" in text:
            (kit / "local" / "log_config.json").write_text(text.replace("/applog/", ""))

    def start(self, name: str):
        self.procs[name] = launch([str(self.kits[name] / "startup" / "sub_start.sh"), "--once"],
                                  self.logs / f"{name}.out", cwd=self.kits[name])

    def log(self, name: str) -> str:
        parts = [(self.logs / f"{name}.out")]
        parts += [self.kits[name] / "log.txt"]
        return "\n".join(p.read_text(errors="replace") for p in parts if p.exists())

    def tails(self, *names) -> str:
        return "\n".join(tail(self.logs / f"{n}.out", 60) for n in names)

    def stop(self):
        if self.session is not None:
            try:
                self.session.close()
            except Exception:  # noqa: BLE001
                pass
            self.session = None
        left = processes_under(self.root)
        if left:
            kill_all(left)


@pytest.fixture(scope="module")
def cc(tmp_path_factory):
    version = _need("FLARE_INTEROP_NVFLARE")
    root = tmp_path_factory.mktemp("cc")
    fl, admin = free_port(), free_port()
    while admin == fl:
        admin = free_port()

    # NVFlare's own kits for the same project.
    ref = root / "nvflare"
    ref.mkdir()
    (ref / "project.yml").write_text(PROJECT_YML % {"project": PROJECT, "fl": fl, "admin": admin})
    for name, role in (("server1", "server"), ("site-1", "client")):
        (ref / f"cc_{name}.yml").write_text(CC_CONFIG % {"role": role, "mock": MOCK})
    env = kit_env()
    env["HOME"] = str(ref)
    exe = Path(sys.executable).parent / "nvflare"
    p = subprocess.run([str(exe), "provision", "-p", "project.yml"], cwd=ref, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr

    # Ours.
    tf = root / "tf"
    tf.mkdir()
    line = ".".join(version.split(".")[:2])
    (tf / "main.tf").write_text(CONFIG % {"project": json.dumps(PROJECT), "line": json.dumps(line), "fl": fl,
                                          "admin": admin, "mock": json.dumps(MOCK)})
    terraform(tf, "apply", "-auto-approve", "-input=false", "-no-color")
    fed = Fed(root, tf / "kits", fl, admin)
    fed.nvflare_kits = ref / "workspace" / PROJECT / "prod_00"
    fed.our_kits = tf / "kits"
    yield fed
    fed.stop()


def _json(path: Path):
    return json.loads(path.read_text())


def _files(kit: Path):
    return sorted(str(p.relative_to(kit)) for p in kit.rglob("*") if p.is_file())


def test_cc_kits_match_nvflare_provision(cc):
    """The CC files of our kits are NVFlare's (mock mode, no SEV hardware)."""
    for name in ("server1", "site-1"):
        ours, theirs = cc.our_kits / name, cc.nvflare_kits / name
        assert _files(ours) == _files(theirs), f"{name}: file sets differ"
        for f in CC_FILES:
            a, b = _json(ours / "local" / f), _json(theirs / "local" / f)
            if f == "cc_manager__p_resources.json":
                for d in (a, b):  # from a Python set / in project order: CCManager only asks `in`
                    args = d["components"][0]["args"]
                    args["cc_verifier_ids"].sort()
                    args["cc_enabled_sites"].sort()
            assert a == b, f"{name} local/{f}:\nours    {json.dumps(a)}\nNVFlare {json.dumps(b)}"
        assert "/applog/log.txt" in (ours / "local" / "log_config.json.default").read_text()
        root_ca = ours / "startup" / "rootCA.pem"
        assert verify_folder(ours, root_ca), f"{name}: NVFlare's verify_folder_signature refuses our CC kit from its root"
    # site-2 is no CC site: no CC files, logs in its workspace.
    plain = cc.our_kits / "site-2"
    assert not (plain / "local" / "cc_manager__p_resources.json").exists()
    assert _json(plain / "local" / "authorization.json.default") == _json(cc.nvflare_kits / "site-2" / "local" / "authorization.json.default")


def test_mock_no_sev_hardware_cc_server_and_client_attest_and_run_a_job(cc, tmp_path):
    """Mock mode (no SEV hardware): CCManager on both sides, tokens made and checked, a job runs."""
    cc.start("server1")
    wait_for("the CC server to listen", lambda: port_open(cc.fl) and port_open(cc.admin), START_TIMEOUT,
             detail=lambda: cc.tails("server1"))
    cc.start("site-1")

    from nvflare.fuel.flare_api.flare_api import Session

    session = Session(username="admin@nvidia.com", startup_path=str(cc.kits["admin@nvidia.com"]), secure_mode=True)
    try:
        session.try_connect(60)
    except BaseException:
        session.api.close()
        raise
    cc.session = session
    wait_for("site-1 to register with the CC server",
             lambda: [c.name for c in session.get_system_info().client_info] == ["site-1"], REGISTER_TIMEOUT,
             interval=2, detail=lambda: cc.tails("server1", "site-1"))

    server_log, client_log = cc.log("server1"), cc.log("site-1")
    assert "Initialized CCManager for site: server" in server_log, cc.tails("server1")
    assert "Initialized CCManager for site: site-1" in client_log, cc.tails("site-1")
    # Registration: site-1 made an x-mock token, the server checked it and sent its own, site-1 checked that.
    assert "Generated fresh token for validation: namespace=x-mock" in client_log
    assert re.search(r"Validated CC info for: .*site-1", server_log), cc.tails("server1")
    assert re.search(r"Validated CC info for: .*server", client_log), cc.tails("site-1")

    from nvflare.apis.dxo import DataKind
    from nvflare.app_common.aggregators.intime_accumulate_model_aggregator import InTimeAccumulateWeightedAggregator
    from nvflare.app_common.np.np_model_persistor import NPModelPersistor
    from nvflare.app_common.np.np_trainer import NPTrainer
    from nvflare.app_common.shareablegenerators.full_model_shareable_generator import FullModelShareableGenerator
    from nvflare.app_common.workflows.scatter_and_gather import ScatterAndGather
    from nvflare.fuel.flare_api.api_spec import MonitorReturnCode
    from nvflare.job_config.api import FedJob

    job = FedJob(name="cc-mock-numpy", min_clients=1)
    job.to_server(NPModelPersistor(model=[[1.0, 2.0], [3.0, 4.0]]), id="persistor")
    job.to_server(InTimeAccumulateWeightedAggregator(expected_data_kind=DataKind.WEIGHTS), id="aggregator")
    job.to_server(FullModelShareableGenerator(), id="shareable_generator")
    job.to_server(ScatterAndGather(min_clients=1, num_rounds=1, wait_time_after_min_received=0, persistor_id="persistor",
                                   aggregator_id="aggregator", shareable_generator_id="shareable_generator",
                                   train_timeout=120), id="scatter_and_gather")
    job.to_clients(NPTrainer(delta=1), tasks=["train"])
    job.export_job(str(tmp_path))
    # 2.7's and 2.8's export leaves an empty app/custom/; the server counts
    # any custom/ as BYOC, which CCManager blocks ("BYOC job not allowed for CC").
    for custom in (tmp_path / "cc-mock-numpy").glob("*/custom"):
        assert not any(custom.iterdir()), f"{custom} holds code"
        custom.rmdir()
    job_id = session.submit_job(str(tmp_path / "cc-mock-numpy"))
    rc, meta = session.monitor_job_and_return_job_meta(job_id, timeout=JOB_TIMEOUT, poll_interval=1)
    assert rc == MonitorReturnCode.JOB_FINISHED, cc.tails("server1", "site-1")
    assert meta["status"] == "FINISHED:COMPLETED", json.dumps(meta, indent=1) + cc.tails("server1", "site-1")
    # The job was scheduled past the server's cross-site CC check.
    server_log = cc.log("server1")
    assert "Cross-site validation passed" in server_log, cc.tails("server1")
    assert "Shutting down site" not in server_log


def test_mock_no_sev_hardware_cc_server_refuses_a_client_without_cc(cc):
    """Mock mode (no SEV hardware): a kit without CC brings no token; NVFlare's CCManager shuts the federation down."""
    assert "server1" in cc.procs, "runs after the positive test"
    cc.start("site-2")
    wait_for("the CC server to refuse site-2 (no CC token)", lambda: "No peer CC info" in cc.log("server1"),
             REGISTER_TIMEOUT, interval=1, detail=lambda: cc.tails("server1", "site-2"))
    assert "Shutting down site server due to: No peer CC info!" in cc.log("server1")
    wait_for("the CC server to shut down", lambda: cc.procs["server1"].poll() is not None, 120, interval=1,
             detail=lambda: cc.tails("server1") + describe(processes_under(cc.kits["server1"])))
