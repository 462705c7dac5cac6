"""`Registry`: a name -> entry table that refuses a second entry under a name it has (as torchvision's
`register_model` does), naming where the first entry and the second came from. The method, architecture,
trunk and written-out-backward registries are each one of these."""
from __future__ import annotations

import inspect
import sys
from collections.abc import Hashable, Iterator, MutableMapping
from typing import Any, Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
Entry = TypeVar("Entry")


def origin_of(obj: Any) -> str:
    """Where `obj` (a function or class) is defined: `module.name (file:line)`, as far as Python can tell
    (a decorated function: the function it wraps)."""
    obj = inspect.unwrap(obj) if callable(obj) else obj
    name = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"
    try:
        return f"{name} ({inspect.getsourcefile(obj)}:{inspect.getsourcelines(obj)[1]})"
    except (OSError, TypeError):
        return name


def caller(depth: int = 1) -> str:
    """`file:line` of the code `depth` frames above the function that calls this."""
    frame = sys._getframe(depth + 1)
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


class Registry(MutableMapping[Key, Entry], Generic[Key, Entry]):
    """Entries by name; `add` (and item assignment) refuses a name already registered, and removing an
    entry (`del`) is allowed, so that a test can register an entry for its duration."""

    def __init__(self, kind: str) -> None:
        self.kind = kind                       # "method", "architecture", ...: how errors name an entry
        self._entries: dict[Key, Entry] = {}
        self._origins: dict[Key, str] = {}

    def add(self, name: Key, entry: Entry, origin: str) -> Entry:
        """Register `entry` under `name`; `origin` says where it comes from (`origin_of`, `caller`)."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice: first by {self._origins[name]}, "
                             f"again by {origin}")
        self._entries[name] = entry
        self._origins[name] = origin
        return entry

    def __setitem__(self, name: Key, entry: Entry) -> None:
        self.add(name, entry, caller())

    def __delitem__(self, name: Key) -> None:
        del self._entries[name]
        del self._origins[name]

    def __getitem__(self, name: Key) -> Entry:
        return self._entries[name]

    def __iter__(self) -> Iterator[Key]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"
