"""Which parts acpd runs, in which order: the order is what makes events reach their hearers."""
from __future__ import annotations

import importlib

import pytest

from acp_openwrt.config import AcpConfig
from acp_openwrt.connect.config import ConnectConfig
from acp_openwrt.coordinator import part_names

IDENTITY = {"acp_node_name": "fd89b714f3db00000200000064000001+@acp.example.com",
            "acp_address": "fd89:b714:f3db:0:200:0:6400:1"}


def short(parts: list[str]) -> list[str]:
    return [p.split(":")[0] for p in parts]


def test_enrolled_node_order() -> None:
    parts = short(part_names(AcpConfig(), IDENTITY))
    assert parts == ["links.part", "brski.proxy.part", "rpl.part", "grasp.part",
                     "acpmap.part", "channels.part", "revocation.part", "discovery.part",
                     "brski.pledge.part", "control.part"]


def test_order_constraints() -> None:
    parts = short(part_names(AcpConfig(registrar=True, registrar_domain="acp.example.com",
                                       connect=(ConnectConfig("bmc", "eth2", subnet_id=1),)),
                             IDENTITY))
    index = {p: i for i, p in enumerate(parts)}
    # RPL and ACP GRASP subscribe to ChannelUp when started: before channels
    assert index["rpl.part"] < index["channels.part"]
    assert index["grasp.part"] < index["channels.part"]
    # channels subscribe to AdjacencyUp when started: before discovery publishes any
    # and to RevocationUpdated: before the revocation part publishes the CRLs it kept
    assert index["channels.part"] < index["revocation.part"]
    assert index["channels.part"] < index["discovery.part"]
    # the registrar floods through the ACP GRASP and tells the local join proxy
    assert index["grasp.part"] < index["brski.registrar.part"]
    assert index["brski.proxy.part"] < index["brski.registrar.part"]
    assert "connect.part" in index and "brski.pledge.part" not in index  # registrar: no pledge
    # the join proxy's process starts early (its Python start-up overlaps charon's)
    assert index["brski.proxy.part"] < index["channels.part"]


def test_not_enrolled_node_runs_no_acp_parts() -> None:
    parts = short(part_names(AcpConfig(join_proxy=False), None))
    assert parts == ["links.part", "discovery.part", "brski.pledge.part", "control.part"]
    registrar = short(part_names(AcpConfig(registrar=True, registrar_domain="x.example"), None))
    assert "brski.registrar.part" not in registrar and "brski.pledge.part" not in registrar


@pytest.mark.parametrize("identity", [None, IDENTITY])
def test_every_part_exists_with_a_name(identity: dict | None) -> None:
    config = AcpConfig(registrar=True, registrar_domain="acp.example.com",
                       connect=(ConnectConfig("bmc", "eth2", subnet_id=1),))
    for spec in part_names(config, identity) + part_names(AcpConfig(), identity):
        module, _, cls = spec.partition(":")
        part = getattr(importlib.import_module(f"acp_openwrt.{module}"), cls)
        assert isinstance(part.name, str) and part.name
        for method in ("start", "stop", "status"):
            assert callable(getattr(part, method))
