"""The control answers of one acpd, read defensively: any shape may arrive, none may crash.

Each fact is taken from the command's own reply when that has the right shape, else from the
copy inside `status`, else it is None (and `why_missing` says why, for the operator).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def dicts_in(value: Any) -> list[dict[str, Any]]:
    return [e for e in as_list(value) if isinstance(e, dict)]


def aware(when: dt.datetime) -> dt.datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


class NodeAnswers:
    """The answers, each looked up once: a command's own reply, else its part in `status`."""

    def __init__(self, answers: Mapping[str, Any], now: dt.datetime) -> None:
        self.answers = answers if isinstance(answers, Mapping) else {}
        self.now = now
        self.status = as_dict(self.answers.get("status"))
        self.enrolled = bool(self.status.get("enrolled")) and bool(self.status.get("identity"))
        self.parts = {p for p in as_list(self.status.get("parts")) if isinstance(p, str)}
        failed = self.status.get("failed_parts")
        self.failed_parts = {str(k): str(v) for k, v in as_dict(failed).items()}
        links = as_dict(self.status.get("links"))
        self.interfaces = self._pick("interfaces", links.get("interfaces"), list)
        self.link_errors = {str(k): str(v) for k, v in as_dict(links.get("errors")).items()}
        self.neighbours = self._pick("neighbors", as_dict(self.status.get("discovery"))
                                     .get("neighbors"), list)
        self.channels = self._pick("channels", as_dict(self.status.get("channels"))
                                   .get("channels"), list)
        self.rpl = self._pick("rpl", self.status.get("rpl"), dict)
        self.brski = self._pick("brski", self.status.get("brski"), dict)
        self.proxy = self._pick("proxy", self.status.get("join_proxy"), dict)
        self.grasp = self.status.get("grasp") if isinstance(self.status.get("grasp"), dict) \
            else None

    def _pick(self, cmd: str, fallback: Any, kind: type) -> Any:
        """The command's reply if it is the right shape, else the status copy, else None."""
        for value in (self.answers.get(cmd), fallback):
            if kind is list and isinstance(value, list):
                return [e for e in value if isinstance(e, dict)]
            if kind is dict and isinstance(value, dict):
                return value
        return None

    def why_missing(self, cmd: str) -> str:
        reply = self.answers.get(cmd)
        if isinstance(reply, BaseException):
            return f"acpd did not answer '{cmd}': {reply}"
        return f"acpd gave no '{cmd}' answer"

    def up_channels(self) -> list[dict[str, Any]]:
        return [c for c in self.channels or [] if c.get("state") == "up"]
