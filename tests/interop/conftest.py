"""Fixtures for the interop tests.

`make interop` runs these once per NVFlare release line, each from its own
venv. Per line it applies examples/quickstart with tests/interop/relay.tf
twice with the provider under test and passes the results in the environment:

  FLARE_INTEROP_NVFLARE    the NVFlare version of this venv (2.9.0); its line (2.9) picks the
                           row of lines.LINES and was passed to Terraform as nvflare_version
  FLARE_INTEROP_A          Terraform dir of the project under test (kits/, .flare-ca/, outputs.json)
  FLARE_INTEROP_B          a second apply with another ca_dir: same names, a different root CA
  FLARE_INTEROP_FL_PORT    fed_learn_port both were applied with (server_host=localhost)
  FLARE_INTEROP_ADMIN_PORT admin_port
  FLARE_INTEROP_RELAY_PORT relay_port (relay-1 listens on localhost)
"""

import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import lines  # noqa: E402
from helpers import Project  # noqa: E402

CA_DIR_A = ".flare-ca"
CA_DIR_B = ".other-ca"


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run these tests with `make interop`", returncode=2)
    return value


@pytest.fixture(scope="session")
def line() -> lines.Line:
    return lines.current()


@pytest.fixture(scope="session")
def project() -> Project:
    return Project.load(_env("FLARE_INTEROP_A"), CA_DIR_A)


@pytest.fixture(scope="session")
def other_project() -> Project:
    return Project.load(_env("FLARE_INTEROP_B"), CA_DIR_B)


@pytest.fixture(scope="session")
def ports():
    return int(_env("FLARE_INTEROP_FL_PORT")), int(_env("FLARE_INTEROP_ADMIN_PORT"))


@pytest.fixture(scope="session")
def relay_port() -> int:
    return int(_env("FLARE_INTEROP_RELAY_PORT"))


# Steps of a class marked `incremental` share state: once one fails, the
# rest are reported as xfail instead of failing for the same reason.
def pytest_runtest_makereport(item, call):
    if "incremental" in item.keywords and call.excinfo is not None and call.when == "call":
        item.parent._previousfailed = item


def pytest_runtest_setup(item):
    if "incremental" in item.keywords:
        previous = getattr(item.parent, "_previousfailed", None)
        if previous is not None:
            pytest.xfail(f"previous step failed ({previous.name})")


def pytest_configure(config):
    # The venv must hold the NVFlare make interop says it does, and its line
    # must have a row in lines.LINES.
    from importlib.metadata import version

    want, have = _env("FLARE_INTEROP_NVFLARE"), version("nvflare")
    if want != have:
        pytest.exit(f"FLARE_INTEROP_NVFLARE={want}, but this venv ({sys.prefix}) has nvflare {have}", returncode=2)
    if lines.line_of(want) not in lines.LINES:
        pytest.exit(f"NVFlare {want}: no row for line {lines.line_of(want)} in tests/interop/lines.py "
                    f"(known: {', '.join(lines.LINES)})", returncode=2)

    # `make interop` runs pytest under timeout(1): turn its SIGTERM into a
    # KeyboardInterrupt so fixture teardown still ends the NVFlare processes.
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def pytest_report_header(config):
    return f"NVFlare {os.environ.get('FLARE_INTEROP_NVFLARE')} (line {lines.line_of(lines.version())}) from {sys.prefix}"
