"""After an acpd restart: adopt what charon and the kernel still hold, remove the rest.

Our connection names carry the if_id and the DULL link (`acp-<if_id>-<link>`), and the
connection carries the peer's link-local, so a channel can be rebuilt from charon alone. Its
established SAs are fed to the state machine again (and re-verified); its interface is reused,
wherever it is. An adopted channel whose adjacency is not heard again within the grace time is
removed. Only connections with an established IKE SA are adopted: the others were attempts
(maybe at forged neighbours, issue 15) and are unloaded, their half-open SAs terminated;
discovery announces the real ones again. xfrm interfaces with our name prefixes but no adopted
connection are deleted.
"""
from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from . import xfrm_interface as xi
from .connection import ACP_IFNAME_PREFIX, DULL_IFNAME_PREFIX, parse_conn_name
from .driver import DriverError

if TYPE_CHECKING:
    from .part import ChannelPart


async def reconcile(svc: ChannelPart) -> None:
    from .part import Channel

    conns = await svc._vici("list_connections")
    sas = await svc._vici("list_sas")
    acp_links = await svc._in(svc._acp_ex, xi.list_xfrm)
    dull_links = await svc._in(svc._dull_ex, xi.list_xfrm)
    now = time.monotonic()
    adopted: dict[int, Channel] = {}
    for info in conns:
        parsed = parse_conn_name(info.name)
        if parsed is None:
            continue
        established = any(sa.conn == info.name and sa.state == "ESTABLISHED" for sa in sas)
        if not info.remote_addrs or svc.table.get(parsed[1], info.remote_addrs[0]) \
                or not established:
            for step in ("terminate_conn", "unload_connection"):
                with contextlib.suppress(DriverError):
                    await svc._vici(step, info.name)
            continue
        if_id, link = parsed
        ch = Channel(info.remote_addrs[0], link, if_id, svc._new_fsm())
        ch.fsm.adopt()
        ch.local_ll = info.local_addrs[0] if info.local_addrs else None
        ch.adopted_until = now + svc.adoption_grace
        ch.acp_ifname = next((x.ifname for x in acp_links if x.if_id == if_id), None)
        ch.prepared = True   # its connection is loaded
        svc.table.add(ch)
        adopted[if_id] = ch
        actions: list[Any] = []
        for sa in sas:
            if sa.conn != info.name or sa.state != "ESTABLISHED":
                continue
            actions += ch.fsm.sa_seen(sa.unique_id, sa.initiator, sa.remote_id)
            for child in sa.children:
                if child.state == "INSTALLED":
                    actions += ch.fsm.child_up(sa.unique_id, child.unique_id, sa.initiator,
                                               sa.remote_id)
        if not any(sa.conn == info.name and sa.children for sa in sas) and ch.acp_ifname:
            await svc._in(svc._acp_ex, xi.delete_if_id, if_id)   # no SA behind it any more
            ch.acp_ifname = None
        svc._dispatch(ch, actions)
    # SAs deleted between list-sas and the channels' creation sent events nobody heard.
    alive = {(sa.conn, sa.unique_id) for sa in await svc._vici("list_sas")}
    for ch in adopted.values():
        gone = [sa_id for sa_id in ch.fsm.sas if (ch.conn, sa_id) not in alive]
        svc._dispatch(ch, [a for sa_id in gone for a in ch.fsm.sa_down(sa_id, time.monotonic())])
    for ns_ex, links, prefix in ((svc._acp_ex, acp_links, ACP_IFNAME_PREFIX),
                                 (svc._dull_ex, dull_links, DULL_IFNAME_PREFIX)):
        for x in links:
            if x.if_id not in adopted and x.ifname.startswith(prefix):
                await svc._in(ns_ex, xi.delete_if_id, x.if_id)
