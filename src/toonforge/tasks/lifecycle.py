"""Task statuses in the order a task walks them, and what counts as terminal."""

from __future__ import annotations

QUEUE = "task_queue"
ACCEPT = "task_accept"
PREPROCESS_START = "task_preprocess_start"
PREPROCESS_END = "task_preprocess_end"
ASSIGN = "task_assign"
START = "task_start"
OUTPUT = "task_output"
OUTPUT_FULL = "task_output_full"
END = "task_end"
POSTPROCESS_START = "task_postprocess_start"
POSTPROCESS_END = "task_postprocess_end"
ERROR = "task_error"
ERROR_FULL = "task_error_full"
CANCEL = "task_cancel"

ORDER = (
    QUEUE,
    ACCEPT,
    PREPROCESS_START,
    PREPROCESS_END,
    ASSIGN,
    START,
    OUTPUT,
    OUTPUT_FULL,
    END,
    POSTPROCESS_START,
    POSTPROCESS_END,
)
# Every status a task can show (Task/List's and `toonforge tasks list`'s status filter).
ALL = (*ORDER, ERROR, ERROR_FULL, CANCEL)
TERMINAL = frozenset({POSTPROCESS_END, CANCEL})
# Statuses of a task that a worker holds (it may be killed, its lease may expire).
RUNNING = frozenset(s for s in ORDER if s not in (QUEUE, POSTPROCESS_END)) | {ERROR, ERROR_FULL}

# Which timestamp column each lifecycle status stamps.
TIME_FIELD = {
    ACCEPT: "accepttime",
    PREPROCESS_START: "preprocessstarttime",
    PREPROCESS_END: "preprocessendtime",
    ASSIGN: "assigntime",
    START: "starttime",
    END: "endtime",
    POSTPROCESS_START: "postprocessstarttime",
    POSTPROCESS_END: "postprocessendtime",
    CANCEL: "canceltime",
}


def is_terminal(status: str) -> bool:
    return status in TERMINAL


def _next_in_order(status: str) -> set[str]:
    i = ORDER.index(status)
    return {ORDER[i + 1]} if i + 1 < len(ORDER) else set()


# Which status may follow which. Beyond walking ORDER forward: progress repeats task_output;
# a task a worker holds may fail (task_error_full), be killed (task_cancel), be handed back
# to the queue (worker shutting down) or be taken again by another worker (task_accept)
# after its worker was lost; the last two always come with a task_error event saying why.
TRANSITIONS: dict[str, set[str]] = {
    QUEUE: {ACCEPT, CANCEL},
    **{
        s: _next_in_order(s) | {ERROR_FULL, CANCEL, QUEUE, ACCEPT}
        for s in ORDER[1:]
        if s not in TERMINAL
    },
    ERROR_FULL: {END, POSTPROCESS_START, POSTPROCESS_END, CANCEL, QUEUE, ACCEPT},
    POSTPROCESS_END: set(),
    CANCEL: set(),
}
TRANSITIONS[START] |= {OUTPUT_FULL}
TRANSITIONS[OUTPUT] |= {OUTPUT}


class InvalidTransition(Exception):
    """A status change the lifecycle does not allow: a bug, never user input."""


def check_transition(old: str, new: str) -> None:
    if new not in TRANSITIONS.get(old, set()):
        raise InvalidTransition(f"{old} -> {new}")
