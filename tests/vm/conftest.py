"""The vm tier's shared fixture: `guest` skips a test unless it runs under the guest kernel."""
from __future__ import annotations

import os

import pytest


@pytest.fixture
def guest() -> None:
    # A fixture, not a skipif mark: the host-side stand-in items must not inherit the skip.
    if os.environ.get("ACP_LAB_GUEST") != "1":
        pytest.skip("needs the guest kernel: run through pytest's acp-lab plugin or `acp-lab vm`")
