"""A real federation from the provider's kits: NVFlare's server, relay-1,
site-1 (to the server) and site-2 (through relay-1) started by the kits' own
scripts on 127.0.0.1, the admin kit driving it through the FLARE API, one small
NumPy FedAvg job, and a clean shutdown. On the way, a client and an admin of
another project (same names, another root CA) are kept out.

The steps run in order and share one federation; after a failed step the rest
are reported as xfail, and the fixture's teardown ends whatever is left.
"""

import json
import socket
import ssl
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import lines
from helpers import (
    ADMIN,
    ADMIN_ROLE,
    CLIENTS,
    DIRECT_CLIENT,
    RELAY,
    RELAYED_CLIENT,
    SERVER,
    copy_kit,
    describe,
    kill_all,
    launch,
    port_open,
    processes_under,
    tail,
    wait_for,
)

FOREIGN_CLIENT = "site-1"  # the other project's site-1: same name, other root CA

START_TIMEOUT = 60
REGISTER_TIMEOUT = 90
JOB_TIMEOUT = 180
STOP_TIMEOUT = 60

NUM_ROUNDS = 2
INITIAL_MODEL = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]


class Federation:
    def __init__(self, project, other_project, run_root: Path, ports, relay_port):
        self.run = run_root
        self.fl_port, self.admin_port = ports
        self.relay_port = relay_port
        self.logs = run_root / "logs"
        self.kits = {}
        for name in (SERVER, ADMIN, RELAY, *CLIENTS):
            self.kits[name] = copy_kit(project.kit(name), run_root / name)
        self.foreign_client = copy_kit(other_project.kit(FOREIGN_CLIENT), run_root / "other-project" / FOREIGN_CLIENT)
        self.foreign_admin = copy_kit(other_project.kit(ADMIN), run_root / "other-project" / ADMIN)
        self._isolate_server_storage()
        self.procs = {}
        self.session = None

    def _isolate_server_storage(self):
        # The server's resources.json.default keeps jobs and snapshots under
        # /tmp/nvflare (NVFlare's default). Give this run its own, the way a
        # site customizes a kit: local/resources.json overrides the .default
        # (local/ is not checked at startup; startup/ stays untouched).
        local = self.kits[SERVER] / "local"
        text = (local / "resources.json.default").read_text()
        assert "/tmp/nvflare/" in text
        (local / "resources.json").write_text(text.replace("/tmp/nvflare/", str(self.run / "server-storage") + "/"))

    def log(self, name: str) -> Path:
        return self.logs / f"{name.replace('@', '_at_').replace('/', '_')}.out"

    def logs_tail(self, *names) -> str:
        return "\n".join(tail(self.log(n)) for n in (names or self.procs))

    def start(self, name: str, kit: Path, once: bool):
        script = "sub_start.sh" if once else "start.sh"
        argv = [str(kit / "startup" / script)] + (["--once"] if once else [])
        self.procs[name] = launch(argv, self.log(name), cwd=kit)

    def client_names(self):
        return sorted(c.name for c in self.session.get_system_info().client_info)


@pytest.fixture(scope="module")
def fed(project, other_project, ports, relay_port, tmp_path_factory):
    f = Federation(project, other_project, tmp_path_factory.mktemp("federation"), ports, relay_port)
    yield f
    if f.session is not None:
        try:
            f.session.close()
        except Exception:  # noqa: BLE001 - the server may be gone already
            pass
    leftovers = processes_under(f.run)
    if leftovers:
        print(f"teardown: ending processes left behind:\n{describe(leftovers)}")
        kill_all(leftovers)


def new_session(kit: Path, timeout: float):
    """new_secure_session(ADMIN, kit), except that a failed login stops the
    session's cell: new_secure_session leaves it retrying in the background,
    and its threads then keep the interpreter from exiting."""
    from nvflare.fuel.flare_api.flare_api import Session

    session = Session(username=ADMIN, startup_path=str(kit), secure_mode=True)
    try:
        session.try_connect(timeout)
    except BaseException:
        session.api.close()
        raise
    return session


def tls_probe(cert: Path, key: Path, ca: Path, port: int) -> bytes:
    """One HTTPS request with the given client certificate to the server's
    fed_learn port (TLS 1.2, so a refused client certificate fails the
    handshake instead of a later read)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # as NVFlare's Python drivers
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            t.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            return t.recv(64)


def tls_handshake(cert: Path, key: Path, ca: Path, port: int) -> bool:
    """Whether a TLS 1.2 handshake with this client certificate completes
    (in TLS 1.2 the server checks the client certificate in the handshake)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname="localhost"):
                return True
    except (ssl.SSLError, ConnectionError, OSError):
        return False


def runtime_process(fed, name: str, module: str):
    """The NVFlare process (python -m <module>) started from kit `name`."""
    def find():
        return [p for p in processes_under(fed.kits[name]) if module in " ".join(p.cmdline())]

    procs = wait_for(f"the {module} process of {name}", find, START_TIMEOUT)
    assert len(procs) == 1, describe(procs)
    return procs[0]


def relay_process(fed):
    return runtime_process(fed, RELAY, "nvflare.private.fed.app.relay.relay")


def client_process(fed, name):
    return runtime_process(fed, name, "nvflare.private.fed.app.client.client_train")


def remote_ports(proc) -> list:
    return sorted({c.raddr.port for c in proc.net_connections(kind="tcp") if c.raddr and c.status == "ESTABLISHED"})


def connects_to(proc, port: int) -> bool:
    return port in remote_ports(proc)


@pytest.mark.incremental
class TestFederation:
    def test_server_starts_from_its_kit(self, fed):
        assert not port_open(fed.fl_port) and not port_open(fed.admin_port), "ports taken before the server started"
        fed.start(SERVER, fed.kits[SERVER], once=False)  # start.sh: sub_start.sh's restart loop, in the background
        wait_for("the server to listen on its fed_learn and admin ports",
                 lambda: port_open(fed.fl_port) and port_open(fed.admin_port) and "Server started" in
                 fed.log(SERVER).read_text(errors="replace"),
                 START_TIMEOUT, detail=lambda: fed.logs_tail(SERVER))
        assert (fed.kits[SERVER] / "daemon_pid.fl").exists(), "sub_start.sh wrote no daemon_pid.fl"

    def test_admin_logs_in_with_the_admin_kit(self, fed):
        fed.session = wait_for("the admin to log in through the FLARE API",
                               lambda: new_session(fed.kits[ADMIN], timeout=10), START_TIMEOUT,
                               interval=2, detail=lambda: fed.logs_tail(SERVER))
        info = fed.session.get_system_info()
        assert info.client_info == [], f"clients before any started: {info.client_info}"

    def test_agent_certificate_is_no_participant(self, fed, project, line):
        """flare_agent_identity's certificate (CN "site-2:flare-agent", role
        flare-agent, extendedKeyUsage serverAuth only) gets nowhere as a
        participant: the server's mTLS refuses it as a client certificate on
        the fed_learn port and on the admin port, so a client presenting it
        cannot register and an admin session with it cannot log in."""
        agent = project.root / project.output("agent_kits")["site-2"]  # relative to the Terraform dir
        crt, key, ca = agent / "agent.crt", agent / "agent.key", agent / "rootCA.pem"
        assert crt.exists() and key.exists(), f"no agent kit in {agent}"
        # The same handshakes with the participants' own certificates work:
        # site-1's on the fed_learn port, the admin's on the admin port.
        for kit, port in ((fed.kits["site-1"], fed.fl_port), (fed.kits[ADMIN], fed.admin_port)):
            s = kit / "startup"
            assert tls_handshake(s / "client.crt", s / "client.key", s / "rootCA.pem", port), f"{kit.name} refused on {port}"
        for port in (fed.fl_port, fed.admin_port):
            assert not tls_handshake(crt, key, ca, port), f"port {port} accepted the agent certificate as a client's"
            try:
                got = tls_probe(crt, key, ca, port)
            except (ssl.SSLError, ConnectionError, OSError):
                got = b""
            assert got == b"", f"port {port} answered a client presenting the agent certificate: {got!r}"

        # Past TLS, NVFlare's own identity checks (on the lines that have
        # them) refuse the certificate too: it asserts no participant's name
        # and is not for client authentication.
        from cryptography import x509 as cx509

        cert = cx509.load_pem_x509_certificate(crt.read_bytes())
        if line.admin_cert_check:
            with pytest.raises(ValueError, match="clientAuth"):
                lines.load(line.admin_cert_check)(cert)
        from nvflare.fuel.hci.security import get_identity_info
        from nvflare.lighter.utils import cert_to_dict

        identity = get_identity_info(cert_to_dict(cert))
        assert identity["common_name"] == "site-2:flare-agent" and identity["role"] == "flare-agent", identity

        time.sleep(2)
        assert fed.client_names() == [], "a client registered"

    def test_client_of_another_project_cannot_join(self, fed, line):
        fed.start("foreign-" + FOREIGN_CLIENT, fed.foreign_client, once=False)
        log = fed.log("foreign-" + FOREIGN_CLIENT)
        wait_for("the other project's client to fail the TLS handshake",
                 lambda: "certificate verify failed" in log.read_text(errors="replace")
                 or "CertificateError" in log.read_text(errors="replace"),
                 START_TIMEOUT, detail=lambda: tail(log))
        time.sleep(3)  # a registration would have landed by now
        assert fed.client_names() == [], "a client of another project registered"
        server_log = fed.log(SERVER).read_text(errors="replace")
        assert f"New client {FOREIGN_CLIENT}" not in server_log

        # The server side of mTLS on its own: the other project's client
        # certificate is refused even by a client that trusts this server.
        own, foreign = fed.kits["site-1"] / "startup", fed.foreign_client / "startup"
        ok = tls_probe(own / "client.crt", own / "client.key", own / "rootCA.pem", fed.fl_port)
        assert ok.startswith(b"HTTP/1.1"), ok
        try:
            got = tls_probe(foreign / "client.crt", foreign / "client.key", own / "rootCA.pem", fed.fl_port)
        except (ssl.SSLError, ConnectionError, OSError):
            got = b""
        assert got == b"", f"the server answered a client certificate from another CA: {got!r}"

        # The other project's admin kit cannot log in either (its own kit is
        # fine: the failure is the authentication against this server). What
        # the FLARE API raises then depends on the line (lines.LINES).
        with pytest.raises(lines.load(line.admin_refused)):
            new_session(fed.foreign_admin, timeout=5).close()

        # stop_fl.sh -y: the restart loop ends the process and exits.
        out = subprocess.run([str(fed.foreign_client / "startup" / "stop_fl.sh"), "-y"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stdout + out.stderr
        wait_for("stop_fl.sh -y to end the other project's client",
                 lambda: not processes_under(fed.foreign_client), STOP_TIMEOUT,
                 detail=lambda: describe(processes_under(fed.foreign_client)) + "\n" + tail(log))
        assert not (fed.foreign_client / "daemon_pid.fl").exists()

    def test_relay_starts_from_its_kit(self, fed):
        assert not port_open(fed.relay_port), "relay port taken before the relay started"
        fed.start(RELAY, fed.kits[RELAY], once=False)  # start.sh
        wait_for("relay-1 to listen on its port", lambda: port_open(fed.relay_port), START_TIMEOUT,
                 detail=lambda: fed.logs_tail(RELAY))
        relay = relay_process(fed)
        wait_for("relay-1 to connect to the server's fed_learn port",
                 lambda: connects_to(relay, fed.fl_port), START_TIMEOUT, detail=lambda: fed.logs_tail(RELAY))

    def test_clients_register(self, fed):
        fed.start(DIRECT_CLIENT, fed.kits[DIRECT_CLIENT], once=True)  # foreground process, no restart loop
        fed.start(RELAYED_CLIENT, fed.kits[RELAYED_CLIENT], once=False)  # start.sh
        wait_for("site-1 and site-2 to register with the server",
                 lambda: fed.client_names() == sorted(CLIENTS), REGISTER_TIMEOUT, interval=2,
                 detail=lambda: fed.logs_tail(SERVER, RELAY, *CLIENTS))

        # site-2 reached the server through relay-1 (its connect_to), site-1 directly.
        relayed, direct = client_process(fed, RELAYED_CLIENT), client_process(fed, DIRECT_CLIENT)
        assert connects_to(relayed, fed.relay_port) and not connects_to(relayed, fed.fl_port), (
            f"site-2's connections: {remote_ports(relayed)}; relay-1 is on {fed.relay_port}, the server on {fed.fl_port}")
        assert connects_to(direct, fed.fl_port) and not connects_to(direct, fed.relay_port), (
            f"site-1's connections: {remote_ports(direct)}")

    def test_numpy_fedavg_job_completes(self, fed, tmp_path):
        from nvflare.apis.dxo import DataKind
        from nvflare.app_common.aggregators.intime_accumulate_model_aggregator import (
            InTimeAccumulateWeightedAggregator,
        )
        from nvflare.app_common.np.np_model_persistor import NPModelPersistor
        from nvflare.app_common.np.np_trainer import NPTrainer
        from nvflare.app_common.shareablegenerators.full_model_shareable_generator import (
            FullModelShareableGenerator,
        )
        from nvflare.app_common.workflows.scatter_and_gather import ScatterAndGather
        from nvflare.job_config.api import FedJob

        # hello-numpy-sag: every client adds 1 to each weight per round; the
        # server averages. Nothing to download, no custom code.
        job = FedJob(name="interop-numpy", min_clients=len(CLIENTS))
        job.to_server(NPModelPersistor(model=INITIAL_MODEL), id="persistor")
        job.to_server(InTimeAccumulateWeightedAggregator(expected_data_kind=DataKind.WEIGHTS), id="aggregator")
        job.to_server(FullModelShareableGenerator(), id="shareable_generator")
        job.to_server(ScatterAndGather(min_clients=len(CLIENTS), num_rounds=NUM_ROUNDS,
                                       wait_time_after_min_received=0, persistor_id="persistor",
                                       aggregator_id="aggregator", shareable_generator_id="shareable_generator",
                                       train_timeout=120), id="scatter_and_gather")
        job.to_clients(NPTrainer(delta=1), tasks=["train"])
        job.export_job(str(tmp_path))

        job_id = fed.session.submit_job(str(tmp_path / "interop-numpy"))
        from nvflare.fuel.flare_api.api_spec import MonitorReturnCode

        rc, meta = fed.session.monitor_job_and_return_job_meta(job_id, timeout=JOB_TIMEOUT, poll_interval=1)
        assert rc == MonitorReturnCode.JOB_FINISHED, (
            f"job {job_id} did not finish within {JOB_TIMEOUT}s\n" + fed.logs_tail(SERVER, *CLIENTS))
        assert meta["status"] == "FINISHED:COMPLETED", json.dumps(meta, indent=1) + fed.logs_tail(SERVER, *CLIENTS)
        assert sorted(meta["job_deploy_detail"]) == sorted(["server: OK"] + [f"{c}: OK" for c in CLIENTS])
        # The server read the submitter's identity from the admin certificate.
        assert (meta["submitter_name"], meta["submitter_org"], meta["submitter_role"]) == (ADMIN, "nvidia", ADMIN_ROLE)

        result = Path(fed.session.download_job_result(job_id))
        model = np.load(result / "workspace" / "models" / "server.npy")
        np.testing.assert_allclose(model, np.array(INITIAL_MODEL) + NUM_ROUNDS)

    def test_clean_shutdown(self, fed):
        fed.session.shutdown("client")  # admin command: both clients log out and exit
        wait_for("site-1 (sub_start.sh --once) to exit", lambda: fed.procs["site-1"].poll() is not None,
                 STOP_TIMEOUT, detail=lambda: fed.logs_tail("site-1"))
        # The runtime touches shutdown.fl as it exits; sub_start.sh's loop sees it and ends too.
        wait_for("site-2's restart loop to see shutdown.fl and exit",
                 lambda: not processes_under(fed.kits["site-2"]), STOP_TIMEOUT,
                 detail=lambda: describe(processes_under(fed.kits["site-2"])) + "\n" + fed.logs_tail("site-2"))
        assert fed.procs["site-1"].returncode == 0, fed.logs_tail("site-1")
        wait_for("the server to drop both clients", lambda: fed.client_names() == [], STOP_TIMEOUT, interval=1)

        fed.session.shutdown("server")  # closes the session
        fed.session = None
        wait_for("the server and its restart loop to exit", lambda: not processes_under(fed.kits[SERVER]),
                 STOP_TIMEOUT, detail=lambda: describe(processes_under(fed.kits[SERVER])) + "\n" +
                 fed.logs_tail(SERVER))

        # A relay outlives the server (its clients may reconnect); the kit's
        # stop_fl.sh -y ends it and its restart loop.
        out = subprocess.run([str(fed.kits[RELAY] / "startup" / "stop_fl.sh"), "-y"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stdout + out.stderr
        wait_for("stop_fl.sh -y to end relay-1", lambda: not processes_under(fed.kits[RELAY]), STOP_TIMEOUT,
                 detail=lambda: describe(processes_under(fed.kits[RELAY])) + "\n" + fed.logs_tail(RELAY))

        left = processes_under(fed.run)
        assert not left, f"processes left behind:\n{describe(left)}"
        for kit in (fed.kits[SERVER], fed.kits[RELAY], fed.kits["site-2"], fed.foreign_client):
            for f in ("daemon_pid.fl", "pid.fl"):
                assert not (kit / f).exists(), f"{kit / f} left behind"
        assert not port_open(fed.fl_port) and not port_open(fed.admin_port) and not port_open(fed.relay_port)
