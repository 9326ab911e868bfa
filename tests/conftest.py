"""Test tiers: the folder a test lives in gives its marker (unit/, netns/, vm/).

netns and vm tests need root; without it they skip with a reason rather than fail.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

TIERS = ("unit", "netns", "vm")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in TIERS:
            if tier in parts and not item.get_closest_marker(tier):
                item.add_marker(getattr(pytest.mark, tier))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if (item.get_closest_marker("netns") or item.get_closest_marker("vm")) and os.geteuid() != 0:
        pytest.skip("needs root (network namespaces / guest kernel); run as root or via `make test`")


# vm tests run inside one QEMU guest per session (acp_openwrt.lab.pytest_guest).
pytest_plugins = ["acp_openwrt.lab.pytest_guest"]
