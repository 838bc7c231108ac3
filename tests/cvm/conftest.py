import pytest


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
