"""NVFlare in a confidential VM, end to end (issue 12 item 6).

One Terraform configuration (main.tf) makes the project, a server, an
admin and site-1, and site-1's CVM kit: its own initrd with flare-init, an
encrypted root from a docker-save archive with Python and NVFlare
(image.py, no Docker daemon), and the root key with the broker's rule in
flare-kbs's directory store. The project admin runs flare-kbs; the server
runs on this host from its kit; site-1's flare-agent (its own agent kit)
launches the CVM when the configuration is applied with launch=true.

In the guest flare-init attests to flare-kbs (SIMULATED SEV-SNP: there is
no SEV hardware here; go-sev-guest's test device and fake AMD chain, the
platform described by flare-agent), gets the key, opens the root and runs
the image's entrypoint, NVFlare's sub_start.sh --once --verify, against the
startup kit bound from the encrypted root. The admin then sees site-1
registered and a NumPy FedAvg job completes on it. Finally no file of the
site holds site-1's private key or the root key, and destroy takes the key
and the rule out of the broker's store.

Run by `make cvm-e2e` (part of `make test`) from the newest NVFlare line's
venv; needs the binaries that target builds and the guest kernel.
"""

import datetime
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests" / "interop"))
sys.path.insert(0, str(HERE))

from helpers import describe, kill_all, launch, port_open, processes_under, tail, wait_for  # noqa: E402

import image  # noqa: E402

SERVER, ADMIN, SITE = "server1", "admin@nvidia.com", "site-1"
SLIRP_HOST = "10.0.2.2"
BOOT_TIMEOUT = 600  # TCG: no KVM for nested guests on CI machines
REGISTER_TIMEOUT = 600
JOB_TIMEOUT = 900
NUM_ROUNDS = 1
INITIAL_MODEL = [[1.0, 2.0], [3.0, 4.0]]


def need(env: str) -> str:
    v = os.environ.get(env, "")
    if not v:
        pytest.fail(f"{env} is not set: run this through `make cvm-e2e`")
    return v


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resolve_server_here():
    """The kits name the server "server1"; on this host it is 127.0.0.1
    (the CVM maps it to 10.0.2.2 through hosts_entries). The admin session
    runs in this process: resolve the name here without touching
    /etc/hosts."""
    orig = socket.getaddrinfo

    def getaddrinfo(host, *a, **kw):
        return orig("127.0.0.1" if host == SERVER else host, *a, **kw)

    socket.getaddrinfo = getaddrinfo


def sitecustomize_dir(run: Path) -> Path:
    """The same for the server's processes (PYTHONPATH sitecustomize)."""
    d = run / "pyhosts"
    d.mkdir(exist_ok=True)
    (d / "sitecustomize.py").write_text(
        "import socket\n_orig = socket.getaddrinfo\n"
        f"def _gai(host, *a, **kw):\n    return _orig('127.0.0.1' if host == {SERVER!r} else host, *a, **kw)\n"
        "socket.getaddrinfo = _gai\n")
    return d


def make_tls(run: Path):
    """A CA and a server certificate for flare-kbs, valid for the address
    the guest dials (10.0.2.2) and 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flare-kbs e2e CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flare-kbs")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(SLIRP_HOST)),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    (run / "kbs.crt").write_bytes(pem(cert))
    k = run / "kbs.key"
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    k.chmod(0o600)
    return pem(ca).decode()


class Run:
    def __init__(self, root: Path):
        self.root = root
        self.bin = Path(need("FLARE_BIN_DIR"))
        self.terraform = need("TERRAFORM")
        self.kernel = need("FLARE_GUEST_KERNEL")
        self.qemu = shutil.which("qemu-system-x86_64") or pytest.fail("qemu-system-x86_64 missing (make agent-e2e-deps)")
        self.ports = {k: free_port() for k in ("fl", "admin", "kbs", "agent")}
        self.tf = root / "tf"
        self.tf.mkdir()
        shutil.copy(HERE / "main.tf", self.tf / "main.tf")
        self.rc = root / "dev.tfrc"
        self.rc.write_text('provider_installation {\n  dev_overrides {\n    "flarekit/flare" = "%s"\n  }\n  direct {}\n}\n' % self.bin)
        self.procs = {}
        self.outputs = {}
        self.times = {}

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def apply(self, launch_cvm: bool, destroy: bool = False):
        v = {"ca_dir": self.root / "admin" / "ca", "kits_dir": self.root / "admin" / "kits", "cvm_dir": self.root / "site" / "cvm",
             "agents_dir": self.root / "site" / "agents", "fed_learn_port": self.ports["fl"], "admin_port": self.ports["admin"],
             "docker_archive": self.root / "admin" / "image.tar", "firmware": self.root / "admin" / "OVMF.amdsev.fd",
             "kernel": self.kernel, "guest_init": self.bin / "flare-init", "kbs_url": f"https://{SLIRP_HOST}:{self.ports['kbs']}",
             "kbs_ca_pem": self.kbs_ca, "kbs_store_dir": self.root / "admin" / "kbs-store", "agent_port": self.ports["agent"],
             "launch": str(launch_cvm).lower()}
        args = [self.terraform, "destroy" if destroy else "apply", "-auto-approve", "-input=false", "-no-color"]
        for k, val in v.items():
            args += ["-var", f"{k}={val}"]
        # A test: simulated reports (no SEV hardware here) are allowed, and named so.
        env = dict(os.environ, TF_CLI_CONFIG_FILE=str(self.rc), TF_IN_AUTOMATION="1", FLARE_ALLOW_SIMULATED="1")
        t0 = time.monotonic()
        out = subprocess.run(args, cwd=self.tf, env=env, capture_output=True, text=True, timeout=1800)
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
        if not destroy:
            o = subprocess.run([self.terraform, "output", "-json"], cwd=self.tf, env=env, capture_output=True, text=True, check=True)
            self.outputs = {k: val["value"] for k, val in json.loads(o.stdout).items()}
        return time.monotonic() - t0

    def start(self, name: str, argv, cwd=None, env_extra=None):
        env_backup = dict(os.environ)
        try:
            os.environ.update(env_extra or {})
            self.procs[name] = launch([str(a) for a in argv], self.log(name), cwd=cwd)
        finally:
            os.environ.clear()
            os.environ.update(env_backup)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    r = Run(tmp_path_factory.mktemp("cvm-e2e"))
    for d in ("admin", "site", "logs"):
        (r.root / d).mkdir(exist_ok=True)
    yield r
    if r.procs.get("agent") is not None:
        r.procs["agent"].terminate()
    leftovers = processes_under(r.root)
    if leftovers:
        print(f"teardown: ending processes left behind:\n{describe(leftovers)}")
        kill_all(leftovers)
    subprocess.run(["pkill", "-f", str(r.root)], check=False)


def site_files(run: Run):
    """Every file a site host holds: the CVM kit, the agent kit, the
    agent's state (drives in use, console log)."""
    for d in (run.root / "site",):
        for p in d.rglob("*"):
            if p.is_file() and not p.is_symlink():
                yield p


def contains(path: Path, secret: bytes) -> bool:
    with open(path, "rb") as f:
        prev = b""
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                return False
            if secret in prev[-len(secret):] + chunk:
                return True
            prev = chunk


@pytest.mark.incremental
class TestCVMFederation:
    def test_apply_builds_the_federation_and_the_cvm_kit(self, run):
        run.kbs_ca = make_tls(run.root / "admin")
        t0 = time.monotonic()
        image.build(run.root / "admin" / "image.tar", Path(sys.prefix),
                    ["/user_config/nvflare/startup/sub_start.sh", "--once", "--verify"], [])
        run.times["image"] = time.monotonic() - t0
        subprocess.run(["go", "run", "./tests/cvm/fakefw", str(run.root / "admin" / "OVMF.amdsev.fd")], cwd=REPO, check=True)
        run.times["apply"] = run.apply(launch_cvm=False)
        kit = Path(run.outputs["cvm_kit"])
        launch_json = json.loads((kit / "launch.json").read_text())
        assert launch_json["expected_measurement"] == run.outputs["measurement"]
        assert any(d["name"] == "root" and d["encrypted"] for d in launch_json["drives"])
        assert not (kit.parent / "cvm_root.key").exists(), "the root key was written next to the kit"
        store = run.root / "admin" / "kbs-store"
        assert any(store.rglob("*")), "nothing in the broker's store"

    def test_broker_server_and_agent_start(self, run):
        admin = run.root / "admin"
        (admin / "kbs.yaml").write_text(
            f"listen: 127.0.0.1:{run.ports['kbs']}\ntls: {{cert: {admin / 'kbs.crt'}, key: {admin / 'kbs.key'}}}\n"
            f"store: {{dir: {admin / 'kbs-store'}}}\nsimulated: true\nlog_level: debug\n")
        run.start("flare-kbs", [run.bin / "flare-kbs", "serve", "--config", admin / "kbs.yaml"])

        server_kit = Path(run.outputs["kits"][SERVER])
        local = server_kit / "local"
        text = (local / "resources.json.default").read_text()
        (local / "resources.json").write_text(text.replace("/tmp/nvflare/", str(run.root / "server-storage") + "/"))
        # A CC kit logs to /applog/, the CVM's drive; the server runs on this
        # host, so it gets NVFlare's site override (local/ is not signed).
        logcfg = (local / "log_config.json.default").read_text()
        assert "/applog/" in logcfg, "the CC server kit does not log to /applog/"
        (local / "log_config.json").write_text(logcfg.replace("/applog/", str(run.root / "logs") + "/server-"))
        run.start(SERVER, [server_kit / "startup" / "start.sh"], cwd=server_kit,
                  env_extra={"PYTHONPATH": str(sitecustomize_dir(run.root))})

        site = run.root / "site"
        (site / "agent.yaml").write_text(
            f"listen: 127.0.0.1:{run.ports['agent']}\nstate_dir: {site / 'state'}\nagent_kit_dir: {run.outputs['agent_kit']}\n"
            f"qemu: {run.qemu}\nmode: simulated\naccel: tcg\nsimulated_firmware: /usr/share/ovmf/OVMF.fd\n"
            "network: user\nforward_address: 127.0.0.1\nrestart: {policy: never}\nstop_timeout: 30s\nattest_timeout: 60s\n")
        run.start("agent", [run.bin / "flare-agent", "serve", "--config", site / "agent.yaml"],
                  env_extra={"FLARE_ALLOW_SIMULATED": "1"})
        wait_for("flare-kbs, the server and flare-agent to listen",
                 lambda: all(port_open(run.ports[p]) for p in ("kbs", "fl", "admin", "agent")), 90,
                 detail=lambda: "\n".join(tail(run.log(n)) for n in ("flare-kbs", SERVER, "agent")))

    def test_terraform_launches_the_cvm(self, run):
        t0 = time.monotonic()
        run.times["launch_apply"] = run.apply(launch_cvm=True)  # flare_cvm_instance waits for a verified report
        assert run.outputs["simulated"] is True
        run.t_launch = t0

    def test_guest_gets_its_key_and_starts_nvflare(self, run):
        consoles = list((run.root / "site" / "state").rglob("console.log"))
        assert len(consoles) == 1, consoles
        run.console = consoles[0]
        wait_for("flare-init to get the key", lambda: "flare-init: key released" in run.console.read_text(errors="replace"),
                 BOOT_TIMEOUT, interval=2, detail=lambda: tail(run.console, 60))
        run.times["boot_to_key"] = time.monotonic() - run.t_launch
        text = run.console.read_text(errors="replace")
        assert f"Measurement: {run.outputs['measurement']} (SIMULATED)" in text, tail(run.console, 60)
        kbs_log = run.log("flare-kbs").read_text(errors="replace")
        assert "simulated" in kbs_log.lower(), tail(run.log("flare-kbs"))

    def test_site_registers(self, run):
        from nvflare.fuel.flare_api.flare_api import Session

        resolve_server_here()
        admin_kit = Path(run.outputs["kits"]["admin"])

        def session():
            s = Session(username=ADMIN, startup_path=str(admin_kit), secure_mode=True)
            try:
                s.try_connect(10)
            except BaseException:
                s.api.close()
                raise
            return s

        run.session = wait_for("the admin to log in", session, 120, interval=3, detail=lambda: tail(run.log(SERVER)))
        wait_for("site-1 (in the CVM) to register", lambda: [c.name for c in run.session.get_system_info().client_info] == [SITE],
                 REGISTER_TIMEOUT, interval=5, detail=lambda: tail(run.console, 80) + "\n" + tail(run.log(SERVER)))
        run.times["boot_to_registered"] = time.monotonic() - run.t_launch
        # NVFlare's CC checks ran at registration, in mock mode (no SEV hardware):
        # site-1 in the CVM made an x-mock token, the server validated it.
        console, server_log = run.console.read_text(errors="replace"), run.log(SERVER).read_text(errors="replace")
        assert "Initialized CCManager for site: site-1" in console, tail(run.console, 80)
        assert "Generated fresh token for validation: namespace=x-mock" in console, tail(run.console, 80)
        assert "Validated CC info for: " in server_log and "site-1" in server_log, tail(run.log(SERVER), 80)

    def test_job_runs_in_the_cvm(self, run, tmp_path):
        from nvflare.apis.dxo import DataKind
        from nvflare.app_common.aggregators.intime_accumulate_model_aggregator import InTimeAccumulateWeightedAggregator
        from nvflare.app_common.np.np_model_persistor import NPModelPersistor
        from nvflare.app_common.np.np_trainer import NPTrainer
        from nvflare.app_common.shareablegenerators.full_model_shareable_generator import FullModelShareableGenerator
        from nvflare.app_common.workflows.scatter_and_gather import ScatterAndGather
        from nvflare.fuel.flare_api.api_spec import MonitorReturnCode
        from nvflare.job_config.api import FedJob

        job = FedJob(name="cvm-numpy", min_clients=1)
        job.to_server(NPModelPersistor(model=INITIAL_MODEL), id="persistor")
        job.to_server(InTimeAccumulateWeightedAggregator(expected_data_kind=DataKind.WEIGHTS), id="aggregator")
        job.to_server(FullModelShareableGenerator(), id="shareable_generator")
        job.to_server(ScatterAndGather(min_clients=1, num_rounds=NUM_ROUNDS, wait_time_after_min_received=0,
                                       persistor_id="persistor", aggregator_id="aggregator",
                                       shareable_generator_id="shareable_generator", train_timeout=600), id="scatter_and_gather")
        job.to_clients(NPTrainer(delta=1), tasks=["train"])
        job.export_job(str(tmp_path))
        t0 = time.monotonic()
        job_id = run.session.submit_job(str(tmp_path / "cvm-numpy"))
        rc, meta = run.session.monitor_job_and_return_job_meta(job_id, timeout=JOB_TIMEOUT, poll_interval=5)
        assert rc == MonitorReturnCode.JOB_FINISHED, tail(run.console, 80) + tail(run.log(SERVER))
        assert meta["status"] == "FINISHED:COMPLETED", json.dumps(meta, indent=1)
        assert sorted(meta["job_deploy_detail"]) == ["server: OK", f"{SITE}: OK"]
        run.times["job"] = time.monotonic() - t0
        result = Path(run.session.download_job_result(job_id))
        model = np.load(result / "workspace" / "models" / "server.npy")
        np.testing.assert_allclose(model, np.array(INITIAL_MODEL) + NUM_ROUNDS)

    def test_no_site_file_holds_a_secret(self, run):
        site_key = (Path(run.outputs["kits"][SITE]) / "startup" / "client.key").read_bytes()
        secrets = {"site-1's private key": b"".join(l for l in site_key.splitlines() if not l.startswith(b"-----"))[:64]}
        store = run.root / "admin" / "kbs-store"
        for p in store.rglob("*"):
            if p.is_file() and "policies" not in p.parts:
                secrets["the root key"] = p.read_bytes()
        assert "the root key" in secrets, f"no key in {store}"
        for p in site_files(run):
            for what, secret in secrets.items():
                assert not contains(p, secret), f"{p} holds {what}"

    def test_shutdown_powers_the_cvm_off_and_destroy_cleans_the_broker(self, run):
        run.session.shutdown("client")
        wait_for("the guest to power off after NVFlare exits",
                 lambda: "flare-init: powering off" in run.console.read_text(errors="replace"), 300, interval=3,
                 detail=lambda: tail(run.console, 40))
        text = run.console.read_text(errors="replace")
        assert "flare-init: workload exited with status 0" in text, tail(run.console, 40)
        run.session.shutdown("server")
        run.session = None
        run.apply(launch_cvm=False, destroy=True)
        assert not [p for p in (run.root / "admin" / "kbs-store").rglob("*") if p.is_file()], "destroy left the key in the store"
        report = {k: round(v, 1) for k, v in run.times.items()}
        print("CVM e2e times (s):", json.dumps(report))
        out = os.environ.get("CVM_E2E_TIMES")
        if out:
            Path(out).write_text(json.dumps(report) + "\n")
