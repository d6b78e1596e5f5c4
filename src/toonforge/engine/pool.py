"""Loaded pipelines kept between tasks, least recently used evicted past a memory budget.

Loading a checkpoint costs seconds to minutes, so a worker keeps what it loaded. The budget
is counted from parameter bytes (what dominates a diffusion pipeline's footprint), which is
an estimate, not a measurement of the allocator.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PoolEntry:
    value: Any
    size_bytes: int
    users: set[str] = field(default_factory=set)  # tools that used this part


class PipelinePool:
    def __init__(self, budget_bytes: int, on_evict: Callable[[str, Any], None] | None = None):
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[str, PoolEntry] = OrderedDict()
        self._on_evict = on_evict

    def get(self, key: str) -> Any | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry.value

    def make_room(self, size_bytes: int) -> list[str]:
        """Evict least recently used entries until `size_bytes` more fit (or the pool is
        empty): called before a load so that the old and the new model are not both held."""
        evicted = []
        while self._entries and self.total_bytes + size_bytes > self.budget_bytes:
            key, entry = self._entries.popitem(last=False)
            evicted.append(key)
            if self._on_evict is not None:
                self._on_evict(key, entry.value)
        return evicted

    def put(self, key: str, value: Any, size_bytes: int) -> list[str]:
        """Keep `value`; a model larger than the whole budget is still kept (alone), since the
        task that loaded it is about to use it."""
        old = self._entries.pop(key, None)
        if old is not None and self._on_evict is not None and old.value is not value:
            self._on_evict(key, old.value)
        evicted = self.make_room(size_bytes)
        self._entries[key] = PoolEntry(value, size_bytes)
        return evicted

    def note_user(self, key: str, tool: str) -> None:
        entry = self._entries.get(key)
        if entry is not None and tool:
            entry.users.add(tool)

    def snapshot(self) -> list[dict[str, Any]]:
        """What is loaded, least recently used first (for `toonforge models status`)."""
        return [
            {"part": key, "bytes": e.size_bytes, "tools": sorted(e.users)}
            for key, e in self._entries.items()
        ]

    def clear(self) -> None:
        self.make_room(self.budget_bytes + 1)

    @property
    def total_bytes(self) -> int:
        return sum(e.size_bytes for e in self._entries.values())

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))


def module_bytes(*modules: Any) -> int:
    """Bytes of parameters and buffers of torch modules (None entries ignored)."""
    total = 0
    for module in modules:
        if module is None or not hasattr(module, "parameters"):
            continue
        for tensor in [*module.parameters(), *module.buffers()]:
            total += tensor.numel() * tensor.element_size()
    return total


def measure_bytes(value: Any) -> int:
    """A part's footprint: its own `size_bytes` if it has one, else the parameters of the torch
    modules it holds (a diffusers pipeline's components, or a module itself)."""
    size = getattr(value, "size_bytes", None)
    if isinstance(size, int):
        return size
    components = getattr(value, "components", None)
    if isinstance(components, dict):
        return module_bytes(*components.values())
    return module_bytes(value)
