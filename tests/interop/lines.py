"""What differs between the NVFlare release lines `make interop` runs against,
as data: one entry per line (major.minor), looked up with the version in
FLARE_INTEROP_NVFLARE. Tests read these tables instead of comparing versions.

Line.differences are the only ways the provider's kits may differ from what
that line's `nvflare provision` writes for the same project. test_kits.py
computes every difference (file only on one side, JSON value, file mode, file
left out of signature.json, certificate field) and fails on one that is not
listed here, and on an entry here that no longer occurs (so the table stays
exact: when a difference goes away, its entry goes too).

An entry is either deliberate (the reason says why we differ) or an `issue`:
a difference that looks unintended and is reported to the provider's
maintainers. A test whose kit shows an issue (and nothing unlisted) is
reported as xfail naming it, so the issue stays visible in every run
instead of being passed as a choice.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Tuple

from helpers import ADMIN, CLIENTS, RELAY, RELAYED_CLIENT, SERVER

ALL = (SERVER, ADMIN, RELAY, *CLIENTS)
MISSING = "(missing)"  # a JSON key or certificate field on one side only


@dataclasses.dataclass(frozen=True)
class Difference:
    kits: Tuple[str, ...]  # kits it occurs in (every one of them)
    file: str  # path inside the kit; fnmatch pattern (startup/*.key)
    what: str  # "file" (present on one side only), "mode", "signed" (in signature.json), or a JSON path (/a/b/0)
    ours: str  # our side: "present"/"absent", an octal mode, "yes"/"no", or the JSON value (json.dumps)
    theirs: str  # nvflare provision's side, the same way
    reason: str
    issue: bool = False  # looks unintended: reported, the test xfails on it

    def matches(self, kit: str, file: str, what: str, ours: str, theirs: str) -> bool:
        import fnmatch

        return (kit in self.kits and fnmatch.fnmatchcase(file, self.file) and what == self.what
                and ours == self.ours and theirs == self.theirs)


# --------------------------------------------------------------------------
# The differences, each with its reason.

RELAY_CONNECTION_SECURITY = Difference(
    (RELAY,), "startup/fed_relay.json", "/connect_to/connection_security", '"mtls"', '"None"',
    "NVFlare's StaticFileBuilder formats the relay's unset connect_to security (Python None) into the "
    "template as the string \"None\"; its drivers (fuel/f3/drivers/net_utils.get_ssl_context) treat every "
    "value but \"tls\" and \"clear\" as mutual TLS, so both mean mTLS. We write the value the runtime means.",
)

SIGNATURES_KEPT = tuple(
    Difference(
        ALL, f"{folder}/signature.json", "file", "present", "absent",
        "NVFlare 2.8+ signs startup/ and local/ only for HE and CC kits, but its runtime still enforces a "
        "signature.json that is present (fed_utils.security_init). We sign every kit on every line, so a kit "
        "changed after `terraform apply` refuses to start (test_one_changed_byte_is_rejected and "
        "test_runtime_refuses_to_start_from_tampered_kit prove it on each line).",
    )
    for folder in ("startup", "local")
)

COMM_CONFIG_SIGNED = Difference(
    (RELAY, RELAYED_CLIENT), "local/comm_config.json", "signed", "yes", "no",
    "NVFlare 2.7 writes local/comm_config.json in StaticFileBuilder.finalize, after SignatureBuilder.build has "
    "signed local/, so its signature.json leaves it out. We sign every file of the folder.",
)

ROOT_VALIDITY = Difference(
    ALL, "startup/rootCA.pem", "cert:validity_days", "3650", "360",
    "flare_project.validity_days defaults to 3650: NVFlare's 360-day root ends the whole federation after a year "
    "and is replaced only by provisioning every kit again; the provider renews participant certificates within "
    "the root's life instead.",
)

ADMIN_CERT_WITHOUT_SAN = Difference(
    (ADMIN,), "startup/client.crt", "cert:subjectAltName", MISSING, "DNS:admin@nvidia.com",
    "An e-mail address is no DNS name (provider/participant_common.go leaves the admin's SAN out). An admin only "
    "ever is a TLS client, and NVFlare's login reads its commonName and unstructuredName (the role), never a SAN.",
)

RELAY_ONE_CERTIFICATE = (
    Difference(
        (RELAY,), "startup/server.crt", "cert:subjectAltName", "DNS:localhost,DNS:relay-1", "DNS:localhost",
        "One key and certificate per participant: the relay's is both its client.crt (NVFlare's names the relay) "
        "and its server.crt (NVFlare's names the listening host), so it names both. A superset of either.",
    ),
    Difference(
        (RELAY,), "startup/client.crt", "cert:subjectAltName", "DNS:localhost,DNS:relay-1", "DNS:relay-1",
        "As for server.crt: the relay's one certificate names the relay and its listening host.",
    ),
)

ROOT_KEY_USAGE_CRITICAL = Difference(
    ALL, "startup/rootCA.pem", "cert:keyUsage",
    "critical digital_signature,content_commitment,key_encipherment,data_encipherment,key_agreement,key_cert_sign,crl_sign",
    "digital_signature,content_commitment,key_encipherment,data_encipherment,key_agreement,key_cert_sign,crl_sign",
    "NVFlare 2.7 marks the root's keyUsage non-critical; we mark it critical, as RFC 5280 4.2.1.3 asks and as "
    "NVFlare 2.8+ does (Go's x509 always does). The bits are 2.7's (internal/kit/lines/2.7); NVFlare 2.7 and "
    "2.9's verify_cert_chain accept either.",
)

# Certificate differences on every line.
CERTS = (ROOT_VALIDITY, ADMIN_CERT_WITHOUT_SAN, *RELAY_ONE_CERTIFICATE)

PRIVATE_KEYS_0600 = Difference(
    ALL, "startup/*.key", "mode", "0600", "0644",
    "Private keys are for the kit's owner only. NVFlare 2.7 writes them 0644; 2.8+ writes 0600 as we do.",
)


# --------------------------------------------------------------------------
# The lines.


@dataclasses.dataclass(frozen=True)
class Line:
    # What a FLARE API Session.try_connect raises when the server refuses an
    # admin of another project (module:class).
    admin_refused: str
    differences: Tuple[Difference, ...]
    # NVFlare's own check of an admin's leaf certificate (module:function),
    # or "" on lines without one; test_federation.py shows it refuses the
    # flare-agent certificate (no clientAuth).
    admin_cert_check: str = ""


LINES = {
    "2.7": Line(
        admin_refused="nvflare.apis.fl_exception:FLCommunicationError",
        differences=(RELAY_CONNECTION_SECURITY, PRIVATE_KEYS_0600, COMM_CONFIG_SIGNED, *CERTS,
                     ROOT_KEY_USAGE_CRITICAL),
    ),
    # 2.8.0 wraps connection failures of Session.try_connect in NoConnection.
    "2.8": Line(
        admin_refused="nvflare.fuel.flare_api.api_spec:NoConnection",
        differences=(RELAY_CONNECTION_SECURITY, *SIGNATURES_KEPT, *CERTS),
    ),
    # 2.9.0 checks an admin certificate's keyUsage and extendedKeyUsage.
    "2.9": Line(
        admin_refused="nvflare.fuel.flare_api.api_spec:NoConnection",
        differences=(RELAY_CONNECTION_SECURITY, *SIGNATURES_KEPT, *CERTS),
        admin_cert_check="nvflare.fuel.sec.admin_cert:validate_admin_leaf_cert",
    ),
}


def version() -> str:
    """The full NVFlare version under test (FLARE_INTEROP_NVFLARE, set by make interop)."""
    return os.environ.get("FLARE_INTEROP_NVFLARE", "")


def line_of(v: str) -> str:
    return ".".join(v.split(".")[:2])


def current() -> Line:
    return LINES[line_of(version())]


def load(ref: str):
    import importlib

    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)
