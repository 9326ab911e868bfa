"""The idle pledge's IDevID check in a short-lived process (issue 19): the same verdict, in the
same words, as loading the IDevID in acpd would give."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from acp_openwrt.brski.pledge.client import load_pledge_identity
from acp_openwrt.brski.pledge.idevid_check import idevid_problem
from acp_openwrt.lab.masa import Masa


def test_a_usable_idevid_has_no_problem(tmp_path: Path) -> None:
    masa = Masa.create(tmp_path / "vendor")
    device = masa.issue_idevid("SN-1")
    load_pledge_identity(device.cert_path, device.key_path, masa.anchor_path)  # loads in acpd
    assert asyncio.run(idevid_problem(device.cert_path, device.key_path,
                                      masa.anchor_path)) is None


@pytest.mark.parametrize("which", ["cert", "key"])
def test_an_unusable_idevid_is_refused_as_loading_it_would(tmp_path: Path, which: str) -> None:
    device = Masa.create(tmp_path / "vendor").issue_idevid("SN-1")
    broken = tmp_path / "broken.pem"
    broken.write_text("not PEM\n")
    cert = broken if which == "cert" else device.cert_path
    key = broken if which == "key" else device.key_path
    with pytest.raises(ValueError) as raised:
        load_pledge_identity(cert, key, device.cert_path)
    assert asyncio.run(idevid_problem(cert, key, device.cert_path)) == str(raised.value)


def test_a_missing_file_is_refused_as_loading_it_would(tmp_path: Path) -> None:
    missing = tmp_path / "idevid.pem"
    with pytest.raises((ValueError, OSError)) as raised:
        load_pledge_identity(missing, missing, missing)
    assert asyncio.run(idevid_problem(missing, missing, missing)) == str(raised.value)
