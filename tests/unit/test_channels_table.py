"""The channel table as the part's one timer (docs/core-contract.md): the soonest of its
channels' timers, and per due channel the actions its timer gave; nothing when called early."""
from __future__ import annotations

from acp_openwrt.channels.channel_table import Channel, ChannelTable, Due
from acp_openwrt.channels.peer_channel import GRACE_OVER, Initiate, PeerChannel, Remove

HIGH = 0xFD00_0000_0000_0000_0000_0000_0000_0004


def channel(table: ChannelTable, peer: str) -> Channel:
    ch = Channel(peer, "eth0", table.allocate_if_id(), PeerChannel(HIGH))
    table.add(ch)
    return ch


def test_the_table_times_all_its_channels_with_one_timer() -> None:
    table = ChannelTable()
    assert table.next_timer() is None and table.handle_timer(1e9) == []
    retrying, adopted, idle = channel(table, "fe80::2"), channel(table, "fe80::3"), \
        channel(table, "fe80::4")
    assert retrying.fsm.adjacency_up(0.0) == [Initiate()]
    retrying.fsm.initiate_failed(0.0, "no answer")   # back-off: next attempt at 10 s
    adopted.fsm.adopt(0.0, grace=150.0)
    assert idle.fsm.next_timer() is None
    assert table.next_timer() == 10.0
    assert table.handle_timer(9.0) == []
    assert table.handle_timer(10.0) == [Due(retrying, [Initiate()])]
    assert table.next_timer() == 150.0                # the attempt is in flight: not timed
    assert table.handle_timer(150.0) == [Due(adopted, [Remove((), GRACE_OVER)])]
    assert table.next_timer() is None
