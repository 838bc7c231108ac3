"""What differs between the NVFlare release lines `make interop` runs against,
as data: one entry per line (major.minor), looked up with the version in
FLARE_INTEROP_NVFLARE. Tests read these tables instead of comparing versions.

DIFFERENCES are the only ways the provider's kits may differ from what that
line's `nvflare provision` writes for the same project. test_kits.py computes
every difference (file only on one side, JSON value, file mode) and fails on
one that is not listed here, and on an entry here that no longer occurs (so
the table stays exact: when a difference goes away, its entry goes too).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Tuple

from helpers import ADMIN, CLIENTS, RELAY, RELAYED_CLIENT, SERVER

ALL = (SERVER, ADMIN, RELAY, *CLIENTS)


@dataclasses.dataclass(frozen=True)
class Difference:
    kits: Tuple[str, ...]  # kits it occurs in (every one of them)
    file: str  # path inside the kit; fnmatch pattern (startup/*.key)
    what: str  # "file" (present on one side only), "mode", "signed" (in signature.json), or a JSON path (/a/b/0)
    ours: str  # our side: "present"/"absent", an octal mode, "yes"/"no", or the JSON value (json.dumps)
    theirs: str  # nvflare provision's side, the same way
    reason: str

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


LINES = {
    "2.7": Line(
        admin_refused="nvflare.apis.fl_exception:FLCommunicationError",
        differences=(RELAY_CONNECTION_SECURITY, PRIVATE_KEYS_0600, COMM_CONFIG_SIGNED),
    ),
    # 2.8.0 wraps connection failures of Session.try_connect in NoConnection.
    "2.8": Line(
        admin_refused="nvflare.fuel.flare_api.api_spec:NoConnection",
        differences=(RELAY_CONNECTION_SECURITY, *SIGNATURES_KEPT),
    ),
    "2.9": Line(
        admin_refused="nvflare.fuel.flare_api.api_spec:NoConnection",
        differences=(RELAY_CONNECTION_SECURITY, *SIGNATURES_KEPT),
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
