"""Test tiers: the folder a test lives in gives its marker (unit/, netns/, vm/, openwrt/).

netns, vm and openwrt tests need root; without it they skip with a reason rather than fail.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "netns", "vm", "openwrt")
ROOT_REASONS = {
    "netns": "network namespaces",
    "vm": "guest kernel",
    "openwrt": "private mount namespaces for /etc/config and rpcd's ACL dir",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        # relative to tests/: a checkout under e.g. /build/openwrt/ must not mark every test
        parts = path.relative_to(TESTS).parts if path.is_relative_to(TESTS) else path.parts
        for tier in TIERS:
            if tier in parts and not item.get_closest_marker(tier):
                item.add_marker(getattr(pytest.mark, tier))


def pytest_runtest_setup(item: pytest.Item) -> None:
    needs = [why for tier, why in ROOT_REASONS.items() if item.get_closest_marker(tier)]
    if needs and os.geteuid() != 0:
        pytest.skip(f"needs root ({'; '.join(needs)}); run as root or via `make test`")


# vm tests run inside one QEMU guest per session (acp_openwrt.lab.pytest_guest).
pytest_plugins = ["acp_openwrt.lab.pytest_guest"]
