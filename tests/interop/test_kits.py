"""The kits the provider wrote, judged by NVFlare's own code (no NVFlare process).

Signatures: nvflare.lighter.utils.verify_folder_signature (single_signer=True,
signature.json), the function behind `python -m nvflare.tool.verify_startup_kits`.
Certificates: nvflare.lighter.utils.load_crt / verify_cert / cert_to_dict, as
the admin login and the cell authenticator read them.
Runtime: the startup check server_train and client_train make before anything
else (SecurityContentService + fed_utils._check_secure_content), and the
admin-side load of fed_admin.json (secure_load_admin_config).
"""

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.x509 import DNSName, SubjectAlternativeName

import lines
from helpers import (
    ADMIN,
    ADMIN_ROLE,
    CLIENTS,
    KIT_TYPES,
    ORG,
    PROJECT_NAME,
    RELAY,
    RELAYED_CLIENT,
    SERVER,
    admin_config_check,
    copy_kit,
    flip_one_byte,
    kit_env,
    runtime_startup_check,
    sha256_der_of_pem,
    verify_folder,
)
from lines import MISSING

ALL_KITS = sorted(KIT_TYPES)
SITES = [SERVER, *CLIENTS]  # kits whose runtime checks startup/ before it starts
PROCESSES = [*SITES, RELAY]  # kits NVFlare's runtime starts from


# The certificate each kit identifies itself with (a relay also has a
# server.crt for its listener: LISTENER_CERTS).
def cert_base(name: str) -> str:
    return "server" if KIT_TYPES[name] == "server" else "client"


# Kits with a listener certificate, and the host clients dial it by.
LISTENER_CERTS = {SERVER: "localhost", RELAY: "localhost"}


def test_outputs_name_every_kit(project):
    kits = project.kit_dirs()
    assert sorted(kits) == ALL_KITS
    for name, rel in kits.items():
        kit = project.root / rel
        assert kit == project.kit(name), f"{name}: output kit_dir {rel} is not <kits_dir>/{name}"
        for sub in ("startup", "local", "transfer"):
            assert (kit / sub).is_dir(), f"{kit}/{sub} missing"


def test_every_kit_carries_the_project_root_ca(project):
    from nvflare.lighter.utils import cert_to_dict, load_crt, verify_cert

    ca_pem = project.operator_root_ca().read_bytes()
    for name in ALL_KITS:
        assert project.root_ca(name).read_bytes() == ca_pem, f"{name}: startup/rootCA.pem is not the project CA"
    assert sha256_der_of_pem(project.operator_root_ca()) == project.output("root_ca_fingerprint")
    root = load_crt(str(project.operator_root_ca()))
    verify_cert(root, root.public_key())  # self-signed, PKCS#1 v1.5
    d = cert_to_dict(root)
    assert d["subject"] == {"commonName": PROJECT_NAME}
    assert d["issuer"] == {"commonName": PROJECT_NAME}


@pytest.mark.parametrize("folder", ["startup", "local"])
@pytest.mark.parametrize("name", ALL_KITS)
def test_folder_signature_verifies(project, name, folder):
    kit = project.kit(name)
    assert verify_folder(kit / folder, kit / "startup" / "rootCA.pem"), (
        f"NVFlare's verify_folder_signature rejects {kit / folder}"
    )


@pytest.mark.parametrize("name", PROCESSES)
def test_verify_startup_kits_tool_accepts(project, name):
    """The CLI sub_start.sh --verify runs, on the pristine kit."""
    kit = project.kit(name)
    r = subprocess.run(
        [sys.executable, "-m", "nvflare.tool.verify_startup_kits", "-f", str(kit / "startup"),
         "-c", str(kit / "startup" / "rootCA.pem")],
        capture_output=True, text=True, timeout=60, env=kit_env())
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("name", ALL_KITS)
def test_participant_cert(project, name):
    from nvflare.lighter.utils import cert_to_dict, load_crt, load_private_key_file, verify_cert

    startup = project.kit(name) / "startup"
    root = load_crt(str(startup / "rootCA.pem"))
    cert = load_crt(str(startup / f"{cert_base(name)}.crt"))
    verify_cert(cert_to_be_verified=cert, root_ca_public_key=root.public_key())

    d = cert_to_dict(cert)
    subject = dict(d["subject"])
    role = subject.pop("unstructuredName", None)
    assert subject == {"commonName": name, "organizationName": ORG}
    if name == ADMIN:
        assert role == ADMIN_ROLE  # NVFlare reads the admin's role from here at login
    assert d["issuer"] == {"commonName": PROJECT_NAME}

    now = datetime.datetime.now(datetime.timezone.utc)
    assert cert.not_valid_before_utc <= now <= cert.not_valid_after_utc

    key = load_private_key_file(str(startup / f"{cert_base(name)}.key"))
    assert key.public_key().public_numbers() == cert.public_key().public_numbers(), "key does not match cert"
    assert key.key_size == 2048


@pytest.mark.parametrize("name", sorted(LISTENER_CERTS))
def test_listener_cert(project, name):
    """The certificate a server or relay presents: chains to the root, names
    the participant and the host its peers dial, matches its key."""
    from nvflare.lighter.utils import cert_to_dict, load_crt, load_private_key_file, verify_cert

    startup = project.kit(name) / "startup"
    root = load_crt(str(startup / "rootCA.pem"))
    cert = load_crt(str(startup / "server.crt"))
    verify_cert(cert_to_be_verified=cert, root_ca_public_key=root.public_key())
    assert cert_to_dict(cert)["subject"] == {"commonName": name, "organizationName": ORG}
    key = load_private_key_file(str(startup / "server.key"))
    assert key.public_key().public_numbers() == cert.public_key().public_numbers(), "key does not match cert"
    sans = cert.extensions.get_extension_for_class(SubjectAlternativeName).value.get_values_for_type(DNSName)
    host = LISTENER_CERTS[name]
    assert host in sans, f"{name} is dialed as {host}, but its server.crt SANs are {sans}"


# NVFlare's CertBuilder sets a role on admin certificates only.
@pytest.mark.parametrize("name", PROCESSES)
def test_site_cert_carries_no_role(project, name):
    from nvflare.lighter.utils import cert_to_dict, load_crt

    cert = load_crt(str(project.kit(name) / "startup" / f"{cert_base(name)}.crt"))
    assert "unstructuredName" not in cert_to_dict(cert)["subject"]


@pytest.mark.parametrize("name", SITES)
def test_runtime_startup_check_accepts(project, name):
    assert runtime_startup_check(project.kit(name), KIT_TYPES[name]) == []


def test_admin_config_check_accepts(project):
    conf = admin_config_check(project.kit(ADMIN))
    admin = conf.get_admin_config()
    assert admin["username"] == ADMIN
    assert admin["host"] == "localhost"


def test_other_project_does_not_chain_to_this_root(project, other_project):
    from nvflare.lighter.utils import load_crt, verify_cert

    assert other_project.output("root_ca_fingerprint") != project.output("root_ca_fingerprint")
    root = load_crt(str(project.operator_root_ca()))
    for name in ALL_KITS:
        foreign = other_project.kit(name)
        cert = load_crt(str(foreign / "startup" / f"{cert_base(name)}.crt"))
        assert cert.subject == load_crt(str(project.kit(name) / "startup" / f"{cert_base(name)}.crt")).subject
        with pytest.raises(InvalidSignature):
            verify_cert(cert_to_be_verified=cert, root_ca_public_key=root.public_key())
        assert not verify_folder(foreign / "startup", project.operator_root_ca())


# One byte changed in a signed file. runtime: what NVFlare's own startup check
# reports ("server"/"client": _check_secure_content, "admin": fed_admin.json load).
TAMPER_CASES = [
    (SERVER, "startup/fed_server.json", True),
    (SERVER, "startup/server.crt", True),
    (SERVER, "startup/server.key", True),
    (SERVER, "startup/sub_start.sh", False),
    (SERVER, "local/resources.json.default", False),
    (SERVER, "local/authorization.json.default", False),
    ("site-1", "startup/fed_client.json", True),
    ("site-1", "startup/client.crt", True),
    ("site-1", "startup/client.key", True),
    ("site-1", "startup/rootCA.pem", True),
    ("site-2", "startup/start.sh", False),
    ("site-2", "local/privacy.json.sample", False),
    ("site-2", "local/log_config.json.default", False),
    ("site-2", "local/relay__resources.json", False),
    (RELAY, "startup/fed_relay.json", False),
    (RELAY, "startup/server.key", False),
    (RELAY, "local/comm_config.json", False),
    (ADMIN, "startup/fed_admin.json", True),
    (ADMIN, "startup/client.crt", False),
    (ADMIN, "local/resources.json.default", False),
]


@pytest.mark.parametrize("name,rel,runtime_checked", TAMPER_CASES, ids=[f"{n}:{r}" for n, r, _ in TAMPER_CASES])
def test_one_changed_byte_is_rejected(project, tmp_path, name, rel, runtime_checked):
    kit = copy_kit(project.kit(name), tmp_path / name)
    true_root = project.operator_root_ca()  # the operator's copy, not the possibly tampered one in the kit
    folder, other = rel.split("/")[0], {"startup": "local", "local": "startup"}[rel.split("/")[0]]
    assert verify_folder(kit / folder, true_root), "precondition: the copy verifies"

    flip_one_byte(kit / rel)

    assert not verify_folder(kit / folder, true_root), f"verify_folder_signature accepts {rel} with a changed byte"
    assert verify_folder(kit / other, true_root), f"{other}/ should be unaffected"

    if KIT_TYPES[name] == "relay":
        # NVFlare's relay (private/fed/app/relay/relay.py) checks nothing when
        # it starts; verify_folder_signature, i.e. sub_start.sh --verify, is
        # what protects a relay kit (test_sub_start_verify_refuses_tampered_kit).
        return
    if KIT_TYPES[name] == "admin":
        if runtime_checked:
            from nvflare.fuel.common.excepts import ConfigError

            with pytest.raises(ConfigError, match="fed_admin.json"):
                admin_config_check(kit)
        else:
            admin_config_check(kit)
        return
    bad = runtime_startup_check(kit, KIT_TYPES[name])
    if runtime_checked:
        assert rel.split("/")[1] in bad, f"the runtime's startup check does not flag {rel}: {bad}"
    else:
        # NVFlare's runtime does not look at this file when it starts; only
        # verify_folder_signature (above) catches it.
        assert bad == []


@pytest.mark.parametrize("name,rel", [("site-1", "startup/fed_client.json"), (SERVER, "startup/server.crt")])
def test_runtime_refuses_to_start_from_tampered_kit(project, tmp_path, name, rel):
    """The real process, started the kit's way (sub_start.sh --once), exits
    before it opens a connection."""
    kit = copy_kit(project.kit(name), tmp_path / name)
    flip_one_byte(kit / rel)
    r = subprocess.run([str(kit / "startup" / "sub_start.sh"), "--once"], capture_output=True, text=True,
                       timeout=90, env=kit_env(), stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "The following files are not secure content." in out, out
    assert rel.split("/")[1] in out, out


@pytest.mark.parametrize("name,rel", [(RELAYED_CLIENT, "startup/fed_client.json"), (RELAY, "startup/fed_relay.json")])
def test_sub_start_verify_refuses_tampered_kit(project, tmp_path, name, rel):
    kit = copy_kit(project.kit(name), tmp_path / name)
    flip_one_byte(kit / rel)
    r = subprocess.run([str(kit / "startup" / "sub_start.sh"), "--verify", "--once"], capture_output=True,
                       text=True, timeout=90, env=kit_env(), stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "verification failed" in out, out
    assert "client_train" not in out and "app.relay" not in out


# --------------------------------------------------------------------------
# Side by side with `nvflare provision` of the same project, by the NVFlare
# of this venv (so each line is compared with its own provisioner). Every
# difference must be in lines.LINES[<line>].differences with its reason.

PROJECT_YML = """\
api_version: 3
name: quickstart
description: NVFlare quickstart federation
participants:
  - {{name: server1, type: server, org: nvidia, fed_learn_port: {fl}, admin_port: {adm}, default_host: localhost}}
  - {{name: admin@nvidia.com, type: admin, org: nvidia, role: project_admin}}
  - {{name: relay-1, type: relay, org: nvidia, listening_host: {{host: localhost, port: {relay}}}}}
  - {{name: site-1, type: client, org: nvidia}}
  # connect_to must be the dict form: a bare string is read as a host name.
  - {{name: site-2, type: client, org: nvidia, connect_to: {{name: relay-1}}}}
builders:
  - path: nvflare.lighter.impl.workspace.WorkspaceBuilder
    args: {{template_file: [master_template.yml, aws_template.yml, azure_template.yml]}}
  - path: nvflare.lighter.impl.static_file.StaticFileBuilder
    args: {{config_folder: config}}
  - path: nvflare.lighter.impl.cert.CertBuilder
  - path: nvflare.lighter.impl.signature.SignatureBuilder
"""


@pytest.fixture(scope="module")
def provisioned(ports, relay_port, tmp_path_factory):
    d = tmp_path_factory.mktemp("nvflare-provision")
    fl, adm = ports
    (d / "project.yml").write_text(PROJECT_YML.format(fl=fl, adm=adm, relay=relay_port))
    nvflare = Path(sys.executable).parent / "nvflare"
    r = subprocess.run([str(nvflare), "provision", "-p", "project.yml", "-w", "ws"], cwd=d, capture_output=True,
                       text=True, timeout=120, env=kit_env())
    assert r.returncode == 0, r.stdout + r.stderr
    prod = d / "ws" / "quickstart" / "prod_00"
    assert sorted(p.name for p in prod.iterdir() if p.is_dir()) == ALL_KITS, r.stdout + r.stderr
    return prod


def files_of(kit: Path) -> dict:
    return {str(p.relative_to(kit)): p for p in sorted(kit.rglob("*")) if p.is_file()}


def is_json(rel: str) -> bool:
    return rel.endswith((".json", ".json.default", ".json.sample")) and not rel.endswith("signature.json")


def json_differences(ours, theirs, path=""):
    """(JSON path, ours, theirs) of every leaf that differs; a key on one
    side only is MISSING on the other; lists of different lengths differ as
    a whole. Values as json.dumps."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for k in sorted(set(ours) | set(theirs)):
            p = f"{path}/{k}"
            if k not in ours:
                yield p, MISSING, json.dumps(theirs[k], sort_keys=True)
            elif k not in theirs:
                yield p, json.dumps(ours[k], sort_keys=True), MISSING
            else:
                yield from json_differences(ours[k], theirs[k], p)
    elif isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        for i, (a, b) in enumerate(zip(ours, theirs)):
            yield from json_differences(a, b, f"{path}/{i}")
    elif ours != theirs or type(ours) is not type(theirs):
        yield path or "/", json.dumps(ours, sort_keys=True), json.dumps(theirs, sort_keys=True)


def signed_files(kit: Path, folder: str):
    sig = kit / folder / "signature.json"
    return set(json.loads(sig.read_text())) if sig.exists() else None


def is_cert(rel: str) -> bool:
    return rel.endswith((".crt", "rootCA.pem"))


def cert_fields(path: Path) -> dict:
    """What a certificate says, field by field, as strings; keys and serials
    (different by nature) left out. Subject attributes are compared as a set,
    and their order separately."""
    from cryptography import x509

    c = x509.load_pem_x509_certificate(path.read_bytes())

    def attrs(name):
        return [(a.oid._name, a.value) for rdn in name.rdns for a in rdn]

    f = {
        "cert:subject": ",".join(sorted(f"{k}={v}" for k, v in attrs(c.subject))),
        "cert:subject_order": ",".join(k for k, _ in attrs(c.subject)),
        "cert:issuer": ",".join(f"{k}={v}" for k, v in attrs(c.issuer)),
        "cert:validity_days": str(round((c.not_valid_after_utc - c.not_valid_before_utc).total_seconds() / 86400)),
        "cert:key": f"{type(c.public_key()).__name__.strip('_')}-{c.public_key().key_size}",
        "cert:signature_algorithm": c.signature_algorithm_oid._name,
        "cert:version": c.version.name,
    }
    for e in c.extensions:
        v = e.value
        if isinstance(v, (x509.SubjectKeyIdentifier, x509.AuthorityKeyIdentifier)):
            val = "present"  # key ids: differ with the keys
        elif isinstance(v, x509.SubjectAlternativeName):
            val = ",".join(sorted(f"{'IP' if isinstance(g, x509.IPAddress) else 'DNS'}:{g.value}" for g in v))
        elif isinstance(v, x509.KeyUsage):
            bits = ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                    "key_agreement", "key_cert_sign", "crl_sign"]
            val = ",".join(b for b in bits if getattr(v, b))
        elif isinstance(v, x509.BasicConstraints):
            val = f"ca={v.ca},path_length={v.path_length}"
        elif isinstance(v, x509.ExtendedKeyUsage):
            val = ",".join(sorted(o._name for o in v))
        else:
            val = repr(v)
        f[f"cert:{e.oid._name}"] = ("critical " if e.critical else "") + val
    return f


def differences(ours_kit: Path, theirs_kit: Path, kind: str):
    """Every difference of one kind ("file", "json", "mode", "signed", "cert") as (file, what, ours, theirs)."""
    ours, theirs = files_of(ours_kit), files_of(theirs_kit)
    if kind == "cert":
        for rel in sorted(set(ours) & set(theirs)):
            if is_cert(rel):
                a, b = cert_fields(ours[rel]), cert_fields(theirs[rel])
                for what in sorted(set(a) | set(b)):
                    if a.get(what) != b.get(what):
                        yield rel, what, a.get(what, MISSING), b.get(what, MISSING)
        return
    if kind == "signed":  # files both sign, where both write a signature.json
        for folder in ("startup", "local"):
            a, b = signed_files(ours_kit, folder), signed_files(theirs_kit, folder)
            if a is not None and b is not None:
                for name in sorted(a ^ b):
                    yield f"{folder}/{name}", "signed", *(("yes", "no") if name in a else ("no", "yes"))
        return
    if kind == "file":
        for rel in sorted(set(ours) ^ set(theirs)):
            yield (rel, "file", "present", "absent") if rel in ours else (rel, "file", "absent", "present")
        return
    for rel in sorted(set(ours) & set(theirs)):
        if kind == "json" and is_json(rel):
            for what, a, b in json_differences(json.loads(ours[rel].read_text()), json.loads(theirs[rel].read_text())):
                yield rel, what, a, b
        elif kind == "mode":
            a, b = ours[rel].stat().st_mode & 0o777, theirs[rel].stat().st_mode & 0o777
            if a != b:
                yield rel, "mode", f"{a:04o}", f"{b:04o}"


def of_kind(d: lines.Difference, kind: str) -> bool:
    if d.what.startswith("cert:"):
        return kind == "cert"
    return {"file": "file", "mode": "mode", "signed": "signed"}.get(d.what, "json") == kind


def check_against_table(line, name, found, kind):
    """found: differences of one kind in kit `name`. Fails on any not in the
    line's table, and on a table entry for this kit and kind that no longer
    occurs; xfails, naming them, when differences the table calls issues
    remain."""
    unexpected = [f for f in found if not any(d.matches(name, *f) for d in line.differences)]
    stale = [d for d in line.differences
             if name in d.kits and of_kind(d, kind) and not any(d.matches(name, *f) for f in found)]
    msg = []
    if unexpected:
        msg.append(f"{name}: differences from `nvflare provision` {lines.version()} that tests/interop/lines.py "
                   f"does not list (file, what, ours, theirs):\n" + "\n".join(f"  {f}" for f in unexpected))
    if stale:
        msg.append(f"{name}: listed in tests/interop/lines.py for {lines.line_of(lines.version())} but gone "
                   f"(remove the entry):\n" + "\n".join(f"  {d.file} {d.what}: {d.ours} vs {d.theirs}" for d in stale))
    assert not msg, "\n".join(msg)
    issues = [f for f in found if not any(d.matches(name, *f) and not d.issue for d in line.differences)]
    if issues:
        pytest.xfail(f"{name}: known issues (tests/interop/lines.py, issue=True): " +
                     "; ".join(f"{f[0]} {f[1]}: ours {f[2]}, nvflare {f[3]}" for f in issues))


@pytest.mark.parametrize("name", ALL_KITS)
def test_same_files_as_nvflare_provision(project, provisioned, line, name):
    check_against_table(line, name, list(differences(project.kit(name), provisioned / name, "file")), "file")


@pytest.mark.parametrize("name", ALL_KITS)
def test_same_json_as_nvflare_provision(project, provisioned, line, name):
    ours = files_of(project.kit(name))
    assert sum(1 for rel in ours if is_json(rel)) >= 2
    check_against_table(line, name, list(differences(project.kit(name), provisioned / name, "json")), "json")


@pytest.mark.parametrize("name", ALL_KITS)
def test_same_modes_as_nvflare_provision(project, provisioned, line, name):
    check_against_table(line, name, list(differences(project.kit(name), provisioned / name, "mode")), "mode")
    for rel, path in files_of(project.kit(name)).items():
        if rel.endswith(".key"):
            assert path.stat().st_mode & 0o777 == 0o600, f"{rel}: a private key readable by others"


@pytest.mark.parametrize("name", ALL_KITS)
def test_same_certificates_as_nvflare_provision(project, provisioned, line, name):
    """rootCA.pem and the participant's certificates, field by field
    (subject, issuer, validity, key, signature algorithm, extensions)."""
    check_against_table(line, name, list(differences(project.kit(name), provisioned / name, "cert")), "cert")


@pytest.mark.parametrize("name", ALL_KITS)
def test_same_files_signed_as_nvflare_provision(project, provisioned, line, name):
    """Our signature.json files cover every file of their folder; where this
    line's provision writes one too, the same files (or the table says why not)."""
    for folder in ("startup", "local"):
        files = {p.name for p in (project.kit(name) / folder).iterdir() if p.is_file()} - {"signature.json"}
        assert signed_files(project.kit(name), folder) == files, f"{folder}/signature.json does not cover {folder}/"
    check_against_table(line, name, list(differences(project.kit(name), provisioned / name, "signed")), "signed")
