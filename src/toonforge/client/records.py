"""Typed views of the API's answers: a task, its output files, a socket event."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# A task is over in one of these statuses (a failed run ends in task_postprocess_end with a
# non-zero pexit).
TERMINAL = ("task_postprocess_end", "task_cancel")


@dataclass(frozen=True)
class Output:
    id: str
    name: str
    contenttype: str
    size: int
    url: str

    @classmethod
    def of(cls, data: dict[str, Any]) -> Output:
        return cls(
            id=str(data.get("id", "")),
            name=str(data.get("name", "")),
            contenttype=str(data.get("contenttype", "")),
            size=_int(data.get("size")),
            url=str(data.get("url", "")),
        )


@dataclass(frozen=True)
class Task:
    """One task as Task/Detail gives it; `raw` holds every field of the record."""

    id: str
    socketaccesstoken: str
    status: str
    pexit: str = ""
    outputs: list[Output] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    debugoutput: str = ""
    debugerror: str = ""
    elapsedseconds: float = 0.0
    totalcost: float = 0.0
    tool: str = ""
    createtime: int = 0
    endtime: int = 0
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, data: dict[str, Any]) -> Task:
        owner, project = data.get("modelslugowner", ""), data.get("modelslugproject", "")
        return cls(
            id=str(data.get("id", "")),
            socketaccesstoken=str(data.get("socketaccesstoken", "")),
            status=str(data.get("status", "")),
            pexit=str(data.get("pexit", "")),
            outputs=[Output.of(o) for o in data.get("outputs") or [] if isinstance(o, dict)],
            parameters=dict(data.get("parameters") or {}),
            debugoutput=str(data.get("debugoutput", "")),
            debugerror=str(data.get("debugerror", "")),
            elapsedseconds=_float(data.get("elapsedseconds")),
            totalcost=_float(data.get("totalcost")),
            tool=f"{owner}/{project}" if owner or project else "",
            createtime=_int(data.get("createtime")),
            endtime=_int(data.get("endtime")),
            raw=dict(data),
        )

    @property
    def done(self) -> bool:
        """The task has ended (successfully, with an error, or cancelled)."""
        return self.status in TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.status == "task_postprocess_end" and self.pexit == "0"


@dataclass(frozen=True)
class TaskList:
    total: int
    tasks: list[Task]


@dataclass(frozen=True)
class Event:
    """One WebSocket frame (or, when polling, a change of status): `type` is the status or
    event (`task_output` carries progress), `message` its content."""

    type: str
    message: Any
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def progress(self) -> tuple[int, int] | None:
        """(step, total steps) of a `task_output` progress event, else None."""
        m = self.message
        if self.type != "task_output" or not isinstance(m, dict):
            return None
        try:
            return int(m["stepCurrent"]), int(m["stepTotal"])
        except (KeyError, TypeError, ValueError):
            return None


def _int(value: Any) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0
