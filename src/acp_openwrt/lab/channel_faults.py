"""Faults an operator meets, on a lab ACP of real acpd processes (guest kernel), and how long
each takes to heal (issue 15). Shared by tests/vm/test_channel_faults.py (which asserts the
targets) and bench/channel_faults.py (which reports the figures).

The ACP is a line n1 (DODAG root) - n2 - n3, every node enrolled, shipped timers. The higher
ACP address decides (RFC 8994 §6.7): n2 is the Decider towards n1 and the Follower towards n3,
so killing n2's charon exercises both roles at once. Each scenario first waits for the ACP to
be whole, breaks it, and returns its timings in seconds; `vanish` destroys n3 for good, so it
comes last.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import time
from typing import Any

from ..netns import remove_namespace
from .acpd_lab import AcpdLab

EXPECTED_UP = {"n1": 1, "n2": 2, "n3": 1}


def form(lab: AcpdLab) -> float:
    """Enrol and start the line; seconds until it is whole."""
    lab.enrol("n1", "option dodag_root '1'")
    lab.enrol("n2")
    lab.enrol("n3")
    began = time.monotonic()
    lab.start_all()
    wait_whole(lab, 180, "the ACP formed")
    return time.monotonic() - began


def channels_whole(lab: AcpdLab, names: tuple[str, ...] = ("n1", "n2", "n3")) -> bool:
    """Every channel up on every node, none in any other state."""
    for name in names:
        states = [ch["state"] for ch in lab.ask(name, "channels")]
        if states.count("up") != EXPECTED_UP[name] or len(states) != EXPECTED_UP[name]:
            return False
    return True


def whole(lab: AcpdLab) -> bool:
    """Every channel up, and n3 reaches n1 across both (RPL routes in place)."""
    return channels_whole(lab) and lab.ping("n3", "n1", timeout=1.0) == 1


def wait_whole(lab: AcpdLab, timeout: float = 120.0, what: str = "the ACP whole",
               check: Any = whole) -> float:
    """Seconds until check(lab); on a timeout every node's channels and log tails are
    printed (a test shows them when it fails)."""
    try:
        return lab.wait(what, lambda: check(lab), timeout=timeout)
    except AssertionError:
        dump(lab)
        raise


def dump(lab: AcpdLab) -> None:
    for name, node in lab.nodes.items():
        if node.proc is None:
            continue
        try:
            for ch in lab.ask(name, "channels"):
                print(name, {k: ch.get(k) for k in ("peer", "state", "role", "ike_sas",
                                                     "child_sas", "last_error", "failures")})
        except Exception as exc:
            print(name, "no answer:", exc)
    for name, node in lab.nodes.items():
        for what, log in (("acpd", node.workdir / "acpd.stderr"),
                          ("charon", node.workdir / "log" / "charon.log")):
            text = log.read_text(errors="replace")[-8000:] if log.exists() else ""
            print(f"--- {name} {what} ---\n{text}")


def charon_pid(lab: AcpdLab, name: str) -> int:
    return int(lab.ask(name, "status")["channels"]["charon"]["pid"])


def acpd_restart(lab: AcpdLab, name: str = "n3") -> dict[str, Any]:
    """SIGKILL the node's acpd and start it again (charon, SAs and interfaces stay and are
    adopted). The leaf by default: a restarted middle node loses the downward routes its
    children gave it until they refresh their DAOs (RPL, minutes), another matter.
    `launch_to_answer_s`: the new acpd's control socket; `channels_s`: from then until its
    channels are up (adopted); `reach_s`: until n3 reaches n1 again; `peer_kept_sas`: the
    peers kept their SAs throughout (nothing was renegotiated)."""
    wait_whole(lab)
    peers = {p: lab.ask(p, "channels") for p in lab.nodes if p != name}
    node = lab.nodes[name]
    assert node.proc is not None
    node.proc.send_signal(signal.SIGKILL)
    node.proc.wait()
    node.proc = None
    began = time.monotonic()
    node.start(timeout=60)
    answering = time.monotonic() - began
    took = wait_whole(lab, 60, f"{name}'s channels adopted and up", channels_whole)
    reach = wait_whole(lab, 120, "n3 reaches n1 again")
    kept = True
    for peer, before in peers.items():
        ages = {ch["peer"]: ch["sa_age"] for ch in lab.ask(peer, "channels")}
        kept &= all(ages.get(ch["peer"], 0) > ch["sa_age"] for ch in before)
    adopted = bool(lab.ask(name, "status")["channels"]["charon"]["adopted"])
    return {"launch_to_answer_s": round(answering, 1), "channels_s": round(took, 1),
            "reach_s": round(took + reach, 1), "peer_kept_sas": kept,
            "charon_adopted": adopted}


def _rebuilt(lab: AcpdLab, since: float) -> bool:
    """whole(), with every channel on every node carried by an IKE SA made after `since`."""
    age_limit = time.monotonic() - since + 0.5
    for name in ("n1", "n2", "n3"):
        for ch in lab.ask(name, "channels"):
            if ch["state"] != "up" or not ch["child_sas"] or ch["newest_sa_age"] is None \
                    or ch["newest_sa_age"] > age_limit:
                return False
    return whole(lab)


def _single_sas(lab: AcpdLab) -> bool:
    return all((ch["ike_sas"], ch["child_sas"]) == (1, 1)
               for name in ("n1", "n2", "n3") for ch in lab.ask(name, "channels"))


def charon_kill(lab: AcpdLab, name: str = "n2") -> dict[str, Any]:
    """SIGKILL the node's charon. `noticed_s`: acpd runs a new charon; `channels_s`: every
    channel of every node up again on new SAs, n3 reaching n1; `cleaned_s`: the peers' stale
    SAs to the dead charon gone too (their DPD, or the Decider's DELETE, gives up on them)."""
    wait_whole(lab)
    pid = charon_pid(lab, name)
    os.kill(pid, signal.SIGKILL)
    began = time.monotonic()
    lab.wait(f"{name}'s acpd notices", lambda: charon_pid(lab, name) != pid, timeout=30)
    noticed = time.monotonic() - began
    wait_whole(lab, 200, "every channel up again on new SAs", lambda lb: _rebuilt(lb, began))
    took = time.monotonic() - began
    wait_whole(lab, 120, "one IKE SA and one CHILD SA per channel again", _single_sas)
    return {"noticed_s": round(noticed, 1), "channels_s": round(took, 1),
            "cleaned_s": round(time.monotonic() - began, 1)}


def link_flap(lab: AcpdLab, seconds: float = 5.0) -> dict[str, Any]:
    """n3's link to n2 down for `seconds` (its host side, so both ends lose carrier), then
    up. `healed_s`: from the link's return until the ACP is whole again."""
    wait_whole(lab)
    assert lab.topology is not None
    n3 = lab.topology["n3"]
    ifname = n3.ifname("n2")
    n3.set_link(ifname, False)
    time.sleep(seconds)
    n3.set_link(ifname, True)
    back = time.monotonic()
    wait_whole(lab, 120, "the ACP whole after the flap")
    return {"down_s": seconds, "healed_s": round(time.monotonic() - back, 1)}


def vanish(lab: AcpdLab, name: str = "n3") -> dict[str, Any]:
    """The node's acpd and charon die by SIGKILL and its DULL and ACP namespaces are deleted:
    no IKE DELETE, no last flood, and the link to it stays up. Only DPD can tell.
    `noticed_s`: n2's channel to it down; `n2_routes_s`, `n1_routes_s`: no route to its ACP
    address left there."""
    wait_whole(lab)
    gone = ipaddress.IPv6Address(lab.acp_address(name))

    def routes_to(node: str) -> list[dict[str, Any]]:
        return [r for r in lab.ask(node, "rpl")["installed"] if r["kind"] == "unicast"
                and r["prefix"] != "::/0" and gone in ipaddress.IPv6Network(r["prefix"])]

    assert routes_to("n2") and routes_to("n1"), "no route to the node before it vanished"
    node = lab.nodes[name]
    pid = charon_pid(lab, name)
    assert node.proc is not None
    node.proc.send_signal(signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    node.proc.wait()
    node.proc = None
    began = time.monotonic()
    for ns in (node.dull_ns, node.acp_ns):
        remove_namespace(ns)
    out: dict[str, Any] = {}
    try:
        lab.wait("n2's channel to it down", lambda: lab.channels_up("n2") == 1, timeout=120)
        out["noticed_s"] = round(time.monotonic() - began, 1)
        lab.wait("n2's routes to it withdrawn", lambda: not routes_to("n2"), timeout=120)
        out["n2_routes_s"] = round(time.monotonic() - began, 1)
        lab.wait("n1's routes to it withdrawn", lambda: not routes_to("n1"), timeout=120)
        out["n1_routes_s"] = round(time.monotonic() - began, 1)
    except AssertionError:
        for other in ("n1", "n2"):
            print(other, "rpl", lab.ask(other, "rpl"))
        dump(lab)
        raise
    return out
