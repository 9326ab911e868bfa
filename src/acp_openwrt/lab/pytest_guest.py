"""pytest plugin for the `vm` tier: boot one guest per test selection, not one per test.

On the host, every selected test marked `vm` is replaced by a stand-in item with the same node
id and no fixtures. The first stand-in to run boots one guest that runs pytest on all of those
node ids; a collector inside the guest writes each test's outcome as JSON into the run's share,
and each stand-in then passes, fails or skips as its guest twin did. Inside the guest
(ACP_LAB_GUEST=1) the plugin only collects results.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _pytest.mark.structures import Mark
from _pytest.nodes import Node

RESULTS_FILE = "pytest-results.json"
TIMEOUT_ENV = "ACP_LAB_VM_TIMEOUT"
DEFAULT_TIMEOUT = 900.0
# Third-party plugins found by entry point (hypothesis alone: 7 s under TCG) stay out of the
# guest; a vm test that needs one names it with `pytest_plugins` or `-p`.
GUEST_PYTEST_ENV = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


def record(results: dict[str, dict[str, str]], nodeid: str, when: str, outcome: str,
           text: str) -> None:
    """Fold one phase report (setup/call/teardown) into the test's single outcome.

    outcome is pytest's (passed/failed/skipped) or xfailed/xpassed. A failure in any phase wins
    over everything, then skip and xfail over a pass.
    """
    entry = results.setdefault(nodeid, {"outcome": "passed", "text": ""})
    if outcome == "failed":
        prefix = "" if entry["outcome"] != "failed" else entry["text"] + "\n"
        entry.update(outcome="failed", text=f"{prefix}({when})\n{text}".rstrip())
    elif outcome in ("skipped", "xfailed") and entry["outcome"] == "passed":
        entry.update(outcome=outcome, text=text)


def _skip_reason(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return str(report.wasxfail)
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return report.longreprtext


CAPTURED_LIMIT = 30_000


def _captured(report: pytest.TestReport) -> str:
    """A failed twin's captured output (node logs the test printed), its tail if long: the
    host shows only what the guest recorded, and CI has nothing else to go on."""
    text = "".join(f"\n----- {name} -----\n{content}" for name, content in report.sections)
    return text if len(text) <= CAPTURED_LIMIT else "\n[...]" + text[-CAPTURED_LIMIT:]


class ResultCollector:
    """Inside the guest: gather outcomes and leave them for the host in $ACP_LAB_OUT."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / RESULTS_FILE
        self.results: dict[str, dict[str, str]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        outcome: str = report.outcome
        if report.skipped and hasattr(report, "wasxfail"):
            outcome = "xfailed"
        text = _skip_reason(report) if report.skipped else report.longreprtext
        if report.failed:
            text += _captured(report)
        record(self.results, report.nodeid, report.when, outcome, text)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:  # an import error in the guest fails the tests it would have held
            record(self.results, f"collect:{report.nodeid}", "collect", "failed",
                   report.longreprtext)

    def pytest_sessionfinish(self) -> None:
        self.path.write_text(json.dumps(self.results, indent=1))


def headline(text: str) -> str:
    """The line a summary should show: pytest's first `E ` line, else the first line."""
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line[1:].strip() for line in lines if line.startswith("E ")]
    return (errors or lines or ["(no report)"])[0]


@dataclass
class GuestVerdict:
    outcome: str  # passed | failed | skipped | xfailed
    text: str


def verdict_for(nodeid: str, results: Mapping[str, Mapping[str, str]] | None,
                problem: str) -> GuestVerdict:
    """What a host stand-in should report, given the guest's results (None: no results at all)."""
    if results is None:
        return GuestVerdict("failed", problem)
    if nodeid in results:
        return GuestVerdict(results[nodeid]["outcome"], results[nodeid]["text"])
    collect_errors = [r["text"] for key, r in results.items() if key.startswith("collect:")]
    detail = "\n".join(collect_errors) or problem
    return GuestVerdict("failed", f"not reported by the guest's pytest\n{detail}".rstrip())


@dataclass
class GuestSession:
    """The one guest run shared by all vm stand-ins of this pytest session (started lazily)."""

    nodeids: list[str]
    rootdir: Path
    timeout: float
    results: dict[str, dict[str, str]] | None = None
    problem: str = ""
    summary: str = ""
    started: bool = False
    output: bytearray = field(default_factory=bytearray)

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", __name__,
                "-q", "--color=no", *self.nodeids]

    def run(self) -> None:
        from acp_openwrt.lab.vm import GuestError, GuestUnavailable, run_in_guest

        self.started = True
        try:
            result = run_in_guest(self.argv(), cwd=str(self.rootdir), timeout=self.timeout,
                                  extra_env=GUEST_PYTEST_ENV, on_output=self.output.extend)
        except GuestError as e:
            self.problem = self.summary = f"guest run failed: {e}"
            self.problem += f"\nguest console (tail):\n{e.console}" if e.console else ""
            return
        except GuestUnavailable as e:
            self.problem = self.summary = f"guest unavailable: {e}"
            return
        self.summary = (f"one guest for {len(self.nodeids)} vm test(s): "
                        f"boot {result.boot_seconds:.1f} s, total {result.total_seconds:.1f} s, "
                        f"guest pytest exit {result.status}")
        tail = "\n".join(self.output.decode("utf-8", "replace").splitlines()[-40:])
        self.problem = f"guest pytest exited {result.status} without results; its output:\n{tail}"
        raw = result.outputs.get(RESULTS_FILE)
        if raw is not None:
            try:
                self.results = json.loads(raw)
            except ValueError as e:
                self.problem = f"unreadable guest results ({e}); guest output:\n{tail}"

    def verdict(self, nodeid: str) -> GuestVerdict:
        if not self.started:
            self.run()
        return verdict_for(nodeid, self.results, self.problem)


SESSION_KEY = pytest.StashKey[GuestSession]()


# Decided by the twin inside the guest; evaluating them again on the host would double them.
GUEST_DECIDED_MARKS = frozenset({"skip", "skipif", "xfail"})


class GuestItem(pytest.Item):
    """Host stand-in for a vm test: reports what its twin did inside the guest."""

    def iter_markers_with_node(self, name: str | None = None) -> Iterator[tuple[Node, Mark]]:
        for node, mark in super().iter_markers_with_node(name):
            if mark.name not in GUEST_DECIDED_MARKS:
                yield node, mark

    def runtest(self) -> None:
        verdict = self.config.stash[SESSION_KEY].verdict(self.nodeid)
        if verdict.outcome == "failed":
            head = headline(verdict.text)
            body = verdict.text.removeprefix(head).lstrip("\n")
            pytest.fail(f"in the guest: {head}\n{body}".rstrip(), pytrace=False)
        if verdict.outcome == "skipped":
            pytest.skip(f"in the guest: {verdict.text}")
        if verdict.outcome == "xfailed":
            pytest.xfail(f"in the guest: {verdict.text}")

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"{self.name} (in guest)"


def _in_guest() -> bool:
    return os.environ.get("ACP_LAB_GUEST") == "1"


def pytest_configure(config: pytest.Config) -> None:
    out = os.environ.get("ACP_LAB_OUT")
    if _in_guest() and out:
        config.pluginmanager.register(ResultCollector(Path(out)), "acp-lab-guest-results")


def _stand_in(item: pytest.Item) -> GuestItem:
    assert item.parent is not None  # a collected test item sits in its module
    new = GuestItem.from_parent(item.parent, name=item.name, nodeid=item.nodeid)
    new.own_markers.extend(item.own_markers)
    new.keywords.update(item.keywords)
    return new


@pytest.hookimpl(trylast=True)  # after tests/conftest.py has marked items by folder
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _in_guest():
        return
    vm_items = [i for i, item in enumerate(items) if item.get_closest_marker("vm")]
    if not vm_items:
        return
    try:
        timeout = float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT)
    except ValueError:
        raise pytest.UsageError(f"{TIMEOUT_ENV} must be a number of seconds") from None
    config.stash[SESSION_KEY] = GuestSession([items[i].nodeid for i in vm_items],
                                             config.rootpath, timeout)
    for i in vm_items:
        items[i] = _stand_in(items[i])


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None and session.started:
        terminalreporter.write_line(f"acp-lab: {session.summary}")
