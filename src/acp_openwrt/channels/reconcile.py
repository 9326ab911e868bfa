"""After an acpd restart: what to adopt of what charon and the kernel still hold, what to remove.

A pure planner (as links/plan.py): snapshots in (charon's connections and SAs, the xfrm
interfaces in ACP and DULL, the channels already known), a `Plan` out; the channel part takes
the snapshots and carries the plan out.

Our connection names carry the if_id and the DULL link (`acp-<if_id>-<link>`), and the
connection carries the peer's link-local, so a channel can be rebuilt from charon alone. Its
established SAs are fed to the state machine again (and re-verified); its interface is reused,
wherever it is. An adopted channel whose adjacency is not heard again within the grace time is
removed (PeerChannel.adopt). Only connections with an established IKE SA are adopted: the others
were attempts (maybe at forged neighbours, issue 15) and are unloaded, their half-open SAs
terminated; discovery announces the real ones again. An ACP interface whose connection has no
CHILD SA any more is deleted; xfrm interfaces with our name prefixes but no adopted connection
are deleted.
"""
from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from .connection import ACP_IFNAME_PREFIX, DULL_IFNAME_PREFIX, parse_conn_name
from .driver import ConnInfo, IkeSa
from .xfrm_interface import XfrmLink

Key = tuple[str, str]   # (DULL link, peer link-local)
Namespace = Literal["acp", "dull"]


@dataclass(frozen=True)
class AdoptedSa:
    """An established IKE SA of an adopted connection, and its installed CHILD SAs."""
    sa_id: str
    initiator: bool
    remote_id: str
    children: tuple[str, ...] = ()


@dataclass(frozen=True)
class Adopt:
    """Rebuild the channel of this connection (loaded in charon, so already prepared)."""
    conn: str
    if_id: int
    dull_ifname: str
    peer: str
    local_ll: str | None
    acp_ifname: str | None          # its interface in ACP, reused
    sas: tuple[AdoptedSa, ...]
    stale_interface: bool = False   # in ACP without any CHILD SA behind it: delete it first


@dataclass(frozen=True)
class Unload:
    """Not adopted: terminate what charon has of this connection and unload it."""
    conn: str


@dataclass(frozen=True)
class DeleteInterface:
    """An xfrm interface of ours that no adopted connection uses."""
    namespace: Namespace
    if_id: int
    ifname: str


@dataclass(frozen=True)
class Plan:
    unload: tuple[Unload, ...] = ()
    adopt: tuple[Adopt, ...] = ()
    delete: tuple[DeleteInterface, ...] = ()


def plan(conns: Iterable[ConnInfo], sas: Sequence[IkeSa], acp_links: Sequence[XfrmLink],
         dull_links: Sequence[XfrmLink], known: Collection[Key] = ()) -> Plan:
    """What to adopt, unload and delete; `known`: (link, peer) of channels the part has."""
    unload: list[Unload] = []
    adopt: list[Adopt] = []
    taken = set(known)
    for info in conns:
        parsed = parse_conn_name(info.name)
        if parsed is None:
            continue   # not ours
        if_id, link = parsed
        mine = [sa for sa in sas if sa.conn == info.name]
        established = [sa for sa in mine if sa.state == "ESTABLISHED"]
        peer = info.remote_addrs[0] if info.remote_addrs else None
        if peer is None or (link, peer) in taken or not established:
            unload.append(Unload(info.name))
            continue
        taken.add((link, peer))
        acp_ifname = next((x.ifname for x in acp_links if x.if_id == if_id), None)
        stale = acp_ifname is not None and not any(sa.children for sa in mine)
        adopt.append(Adopt(
            info.name, if_id, link, peer,
            local_ll=info.local_addrs[0] if info.local_addrs else None,
            acp_ifname=None if stale else acp_ifname,
            sas=tuple(AdoptedSa(sa.unique_id, sa.initiator, sa.remote_id,
                                tuple(c.unique_id for c in sa.children
                                      if c.state == "INSTALLED"))
                      for sa in established),
            stale_interface=stale))
    adopted = {a.if_id for a in adopt}
    ours: tuple[tuple[Namespace, Sequence[XfrmLink], str], ...] = (
        ("acp", acp_links, ACP_IFNAME_PREFIX), ("dull", dull_links, DULL_IFNAME_PREFIX))
    delete = [DeleteInterface(namespace, x.if_id, x.ifname) for namespace, links, prefix in ours
              for x in links if x.if_id not in adopted and x.ifname.startswith(prefix)]
    return Plan(tuple(unload), tuple(adopt), tuple(delete))


def vanished(adopted: Mapping[str, Iterable[str]], sas: Sequence[IkeSa]) -> dict[str, list[str]]:
    """Per adopted connection, its SAs that a later list-sas no longer shows: deleted between
    the first listing and the channels' creation, their events heard by nobody."""
    alive = {(sa.conn, sa.unique_id) for sa in sas}
    out: dict[str, list[str]] = {}
    for conn, sa_ids in adopted.items():
        gone = [sa_id for sa_id in sa_ids if (conn, sa_id) not in alive]
        if gone:
            out[conn] = gone
    return out
