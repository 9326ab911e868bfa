"""Fixtures for netns tests: topologies that are always removed, also when the test fails.

    def test_neighbours(topology):
        topo = topology(line(3))            # up, under a fresh random prefix
        topo["n1"].link_local("eth0")
        topo2 = topology(segment(4), prefix="seg1")   # as many as a test needs

After the test (passed, failed or errored) each topology is taken down, then anything else
left under its prefix (say acpd's `<prefix>-n1-dull`) is removed too; a namespace that still
cannot be removed fails the test in teardown.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from acp_openwrt.lab.acpd_lab import AcpdLab
from acp_openwrt.lab.topology import Topology, TopologySpec, cleanup_stale, line, random_prefix
from acp_openwrt.netns import list_namespaces


class TopologyFactory(Protocol):
    def __call__(self, spec: TopologySpec, prefix: str | None = None) -> Topology: ...


@pytest.fixture
def topology() -> Iterator[TopologyFactory]:
    made: list[Topology] = []

    def make(spec: TopologySpec, prefix: str | None = None) -> Topology:
        topo = Topology(spec, prefix or random_prefix())
        made.append(topo)  # noted before up(): a prefix is swept even if up() fails half way
        return topo.up()

    yield make
    problems: list[str] = []
    for topo in reversed(made):
        try:
            topo.down()
        except OSError as exc:
            problems.append(f"{topo.prefix}: {exc}")
        try:
            cleanup_stale(topo.prefix)
        except OSError as exc:
            problems.append(f"{topo.prefix}: {exc}")
    prefixes = tuple(f"{topo.prefix}-" for topo in made)
    left = [name for name in list_namespaces() if name.startswith(prefixes)] if prefixes else []
    if problems or left:
        pytest.fail(f"topology teardown: {'; '.join(problems)} left: {left}", pytrace=False)


@pytest.fixture(scope="module")
def link() -> Iterator[Topology]:
    """One n1 - n2 line for a whole module (its tests share it), taken down after the module
    and swept under its prefix."""
    topo = Topology(line(2), random_prefix())
    try:
        yield topo.up()
    finally:
        topo.down()
        cleanup_stale(topo.prefix)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[AcpdLab]:
    """Real acpd on a line of two nodes (n1 - n2), closed after the test; a module that needs
    another shape defines its own `lab`."""
    lab = AcpdLab(line(2), tmp_path).up()
    try:
        yield lab
    finally:
        lab.close()
