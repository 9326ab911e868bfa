"""After an acpd restart, the plan (channels/reconcile.py) from plain snapshots of charon and the
kernel: established connections adopted with their SAs and interface, attempts unloaded, stray
interfaces deleted."""
from __future__ import annotations

from acp_openwrt.channels.driver import ChildSa, ConnInfo, IkeSa
from acp_openwrt.channels.reconcile import (
    Adopt,
    AdoptedSa,
    DeleteInterface,
    Plan,
    Unload,
    plan,
    vanished,
)
from acp_openwrt.channels.xfrm_interface import XfrmLink


def conn(if_id: int, link: str = "eth0", peer: str = "fe80::2") -> ConnInfo:
    return ConnInfo(f"acp-{if_id}-{link}", ("fe80::1",), (peer,))


def sa(conn_name: str, sa_id: str, state: str = "ESTABLISHED",
       children: tuple[ChildSa, ...] = (), initiator: bool = True) -> IkeSa:
    return IkeSa(conn_name, sa_id, state, initiator, "fe80::1", "fe80::2", "peer-id",
                 children=children)


def xfrm(ifname: str, if_id: int) -> XfrmLink:
    return XfrmLink(ifname, index=10 + if_id, if_id=if_id, link=2, up=True)


INSTALLED = ChildSa("c1", "INSTALLED")


def test_nothing_left_nothing_to_do() -> None:
    assert plan([], [], [], []) == Plan()


def test_an_established_channel_is_adopted_with_its_sas_and_interface() -> None:
    sas = [sa("acp-256-eth0", "1", children=(INSTALLED, ChildSa("c2", "REKEYING")))]
    out = plan([conn(256)], sas, [xfrm("acp_12340004", 256)], [])
    assert out == Plan(adopt=(Adopt(
        "acp-256-eth0", 256, "eth0", "fe80::2", "fe80::1", "acp_12340004",
        (AdoptedSa("1", True, "peer-id", ("c1",)),)),))


def test_attempts_and_strangers_connections() -> None:
    """Not established: an attempt (maybe at a forged neighbour) is unloaded; not ours: left
    alone; no remote address: unloaded."""
    conns = [conn(256), conn(257, peer="fe80::3"), ConnInfo("other"),
             ConnInfo("acp-258-eth0", ("fe80::1",), ())]
    sas = [sa("acp-256-eth0", "1", state="CONNECTING"), sa("other", "2")]
    assert plan(conns, sas, [], []) == Plan(unload=(Unload("acp-256-eth0"),
                                                    Unload("acp-257-eth0"),
                                                    Unload("acp-258-eth0")))


def test_one_channel_per_link_and_peer() -> None:
    conns = [conn(256), conn(257), conn(258, link="eth1")]
    sas = [sa(c.name, str(n)) for n, c in enumerate(conns)]
    out = plan(conns, sas, [], [], known={("eth1", "fe80::2")})
    assert [a.conn for a in out.adopt] == ["acp-256-eth0"]
    assert out.unload == (Unload("acp-257-eth0"), Unload("acp-258-eth1"))


def test_an_interface_without_a_child_sa_behind_it_is_deleted_not_reused() -> None:
    out = plan([conn(256)], [sa("acp-256-eth0", "1")], [xfrm("acp_12340004", 256)], [])
    (adopt,) = out.adopt
    assert adopt.stale_interface and adopt.acp_ifname is None
    assert adopt.sas == (AdoptedSa("1", True, "peer-id"),)
    assert out.delete == ()   # the adopted channel deletes it itself


def test_our_stray_interfaces_are_deleted_in_both_namespaces_others_kept() -> None:
    acp = [xfrm("acp_12340004", 256), xfrm("acp_99990001", 300), xfrm("xfrm0", 301)]
    dull = [xfrm("acpx100", 256), xfrm("acpx12c", 300), xfrm("ipsec0", 302)]
    out = plan([conn(256)], [sa("acp-256-eth0", "1", children=(INSTALLED,))], acp, dull)
    assert out.delete == (DeleteInterface("acp", 300, "acp_99990001"),
                          DeleteInterface("dull", 300, "acpx12c"))


def test_sas_gone_since_the_first_listing() -> None:
    later = [sa("acp-256-eth0", "1"), sa("acp-257-eth0", "9")]
    assert vanished({"acp-256-eth0": ["1", "2"], "acp-257-eth0": ["3"], "acp-258-eth0": []},
                    later) == {"acp-256-eth0": ["2"], "acp-257-eth0": ["3"]}
