"""Time to the first ping over a secure channel: ChannelPart vs a bare `swanctl --initiate`.

Runs in the guest (the host kernel has no ESP): `acp-lab vm -- python3 bench/channels.py`.
Both scenarios use two nodes on one veth, certificates from one lab CA, the same proposals,
identities, traffic selectors and xfrm if_id, one charon per node with the same
strongswan.conf. Figures, each the median of --runs:
  acp    from AdjacencyUp published on both nodes (at the same instant, so both initiate and
         the Decider deletes the duplicate) to the first echo reply between ACP loopbacks
  bare   from `swanctl --initiate` (one side) to the first echo reply, with a hand-written
         swanctl.conf and the xfrm interfaces made by hand in DULL
The issue's target is acp/bare <= 1.5.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from acp_openwrt import netns
from acp_openwrt.channels import xfrm_interface as xi
from acp_openwrt.channels.charon import CharonSupervisor
from acp_openwrt.channels.connection import ESP_PROPOSALS, IKE_PROPOSALS
from acp_openwrt.channels.strongswan_conf import CharonSettings
from acp_openwrt.lab.channel_testbed import BedNode, Testbed, ping, route_via

IF_ID = 300
SETTINGS = CharonSettings(vici_socket="/run/charon.vici")


async def first_reply(ns: str, source: str, target: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    loop = asyncio.get_running_loop()
    while time.monotonic() < deadline:
        try:
            if await loop.run_in_executor(None, ping, ns, source, target, 1, 0.05):
                return
        except OSError:  # no route yet: the channel is not up
            await asyncio.sleep(0.02)
    raise TimeoutError(f"no echo reply from {target} within {limit:g} s")


async def acp_run(root: Path) -> float:
    bed = Testbed(root)
    try:
        a, b = bed.add_node("a"), bed.add_node("b")
        if_a, if_b = bed.link(a, b)
        for node in (a, b):
            await node.new_service(charon_settings=SETTINGS).start()
        names: dict[str, str] = {}

        def route_when_up(node: BedNode, peer: BedNode):
            def on_up(ev) -> None:
                names[node.name] = ev.acp_ifname
                asyncio.get_running_loop().run_in_executor(None, route_via, node, peer,
                                                           ev.acp_ifname)
            return on_up
        from acp_openwrt.events import ChannelUp
        a.ctx.bus.subscribe(ChannelUp, route_when_up(a, b))
        b.ctx.bus.subscribe(ChannelUp, route_when_up(b, a))
        start = time.monotonic()
        a.adjacency_up(if_a)
        b.adjacency_up(if_b)
        await first_reply(a.acp, a.address, b.address)
        return time.monotonic() - start
    finally:
        await bed.close()


def swanctl_conf(node: BedNode, local_ll: str, peer_ll: str) -> str:
    return f"""connections {{
    acp {{
        version = 2
        local_addrs = {local_ll}
        remote_addrs = {peer_ll}
        mobike = no
        encap = no
        proposals = {",".join(IKE_PROPOSALS)}
        send_cert = always
        keyingtries = 1
        local {{
            auth = pubkey
            certs = node.crt
            id = {node.address}
        }}
        remote {{
            auth = pubkey
            id = %any
            cacerts = ca.crt
        }}
        children {{
            acp {{
                mode = tunnel
                local_ts = ::/0
                remote_ts = ::/0
                esp_proposals = {",".join(ESP_PROPOSALS)}
                if_id_in = {IF_ID}
                if_id_out = {IF_ID}
            }}
        }}
    }}
}}
"""


def swanctl(node: BedNode, sup: CharonSupervisor, *args: str) -> None:
    env = dict(os.environ, SWANCTL_DIR=str(node.ctx.run_dir / "swanctl"))
    cmd, rest = args[0], args[1:]
    subprocess.run(["swanctl", cmd, "--uri", f"unix://{sup.vici_socket}", *rest], env=env,
                   check=True, capture_output=True, timeout=120)


def hand_wire(node: BedNode, ifname: str, peer: BedNode, peer_ll: str) -> None:
    """In DULL: the xfrm interface and route as an operator would, addresses on lo there."""
    xi.prepare(ifname, "acpx-bare", IF_ID, peer_ll)
    xi.bring_up("acpx-bare", "fe80::99")
    xi.set_loopback(node.address, True)
    import socket

    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        (index,) = ipr.link_lookup(ifname="acpx-bare")
        ipr.route("replace", dst=f"{peer.address}/128", oif=index, family=socket.AF_INET6)


async def bare_run(root: Path) -> float:
    bed = Testbed(root)
    sups: list[CharonSupervisor] = []
    try:
        a, b = bed.add_node("a"), bed.add_node("b")
        if_a, if_b = bed.link(a, b)
        for node, ifname, peer in ((a, if_a, b), (b, if_b, a)):
            local_ll = netns.call_in(node.dull, xi.link_local_of, ifname)
            peer_ll = node.links[ifname]
            conf_dir = node.ctx.run_dir / "swanctl"
            for sub in ("x509", "x509ca", "private"):
                (conf_dir / sub).mkdir(parents=True, exist_ok=True)
            (conf_dir / "x509" / "node.crt").write_bytes(node.creds.cert_path.read_bytes())
            (conf_dir / "x509ca" / "ca.crt").write_bytes(node.creds.anchor_path.read_bytes())
            (conf_dir / "private" / "node.key").write_bytes(node.creds.key_path.read_bytes())
            (conf_dir / "swanctl.conf").write_text(swanctl_conf(node, local_ll, peer_ll))
            netns.call_in(node.dull, hand_wire, node, ifname, peer, peer_ll)
            sup = CharonSupervisor(node.dull, node.ctx.run_dir, node.ctx.log_dir,
                                   settings=SETTINGS)
            await sup.start()
            sups.append(sup)
            swanctl(node, sup, "--load-all")
        start = time.monotonic()
        swanctl(a, sups[0], "--initiate", "--child", "acp", "--ike", "acp")
        await first_reply(a.dull, a.address, b.address)
        return time.monotonic() - start
    finally:
        for sup in sups:
            await sup.stop()
        bed.remove_namespaces()


async def main(runs: int, json_path: str | None = None) -> int:
    acp, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            bare.append(await bare_run(Path(tmp) / f"bare{i}"))
            acp.append(await acp_run(Path(tmp) / f"acp{i}"))
    a, b = statistics.median(acp), statistics.median(bare)
    print(f"time to first ping over the channel, median of {runs} (guest, TCG):")
    print(f"  acp  (ChannelPart, both sides start)  {a:6.2f} s   runs: "
          + " ".join(f"{x:.2f}" for x in acp))
    print(f"  bare (swanctl --initiate, one side)      {b:6.2f} s   runs: "
          + " ".join(f"{x:.2f}" for x in bare))
    print(f"  ratio acp/bare {a / b:.2f} (target <= 1.5)")
    if json_path:
        write_json(json_path, {
            "runs": runs, "acp_s": round(a, 2), "bare_s": round(b, 2), "ratio": round(a / b, 2),
            "acp_runs_s": [round(x, 2) for x in acp], "bare_runs_s": [round(x, 2) for x in bare]})
    return 0


def write_json(path: str, figures: dict[str, object]) -> None:
    Path(path).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", metavar="PATH", help="also write the figures here as JSON")
    if os.environ.get("ACP_LAB_GUEST") != "1":
        print("run it in the guest: acp-lab vm -- python3 bench/channels.py", file=sys.stderr)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.runs, args.json)))
