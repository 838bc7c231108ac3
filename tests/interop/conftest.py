"""Fixtures for the interop tests.

`make interop` applies examples/quickstart twice with the provider under test
and passes the results in the environment:

  FLARE_INTEROP_A          Terraform dir of the project under test (kits/, .flare-ca/, outputs.json)
  FLARE_INTEROP_B          a second apply with another ca_dir: same names, a different root CA
  FLARE_INTEROP_FL_PORT    fed_learn_port both were applied with (server_host=localhost)
  FLARE_INTEROP_ADMIN_PORT admin_port
"""

import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import Project  # noqa: E402

CA_DIR_A = ".flare-ca"
CA_DIR_B = ".other-ca"


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run these tests with `make interop`", returncode=2)
    return value


@pytest.fixture(scope="session")
def project() -> Project:
    return Project.load(_env("FLARE_INTEROP_A"), CA_DIR_A)


@pytest.fixture(scope="session")
def other_project() -> Project:
    return Project.load(_env("FLARE_INTEROP_B"), CA_DIR_B)


@pytest.fixture(scope="session")
def ports():
    return int(_env("FLARE_INTEROP_FL_PORT")), int(_env("FLARE_INTEROP_ADMIN_PORT"))


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
    # `make interop` runs pytest under timeout(1): turn its SIGTERM into a
    # KeyboardInterrupt so fixture teardown still ends the NVFlare processes.
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
