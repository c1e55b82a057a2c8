"""A small typed name -> object registry whose lookup errors list the valid names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects of one kind (presets, pruning methods, criteria, ...).

    Args:
        kind: what the entries are, used in error messages ("model", "pruning method", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name``; registering a name twice is a programming error."""
        if name in self._entries:
            raise KeyError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        return obj

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def deco(obj: T) -> T:
            return self.add(name, obj)

        return deco

    def remove(self, name: str) -> T:
        """Unregister ``name`` and return its entry (tests undo what they register)."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; choose from: {', '.join(self.names())}")
        return self._entries.pop(name)

    @contextmanager
    def registered(self, name: str, obj: T) -> Iterator[T]:
        """Register ``obj`` under ``name`` for the ``with`` block only; removed on exit, even after an error."""
        self.add(name, obj)
        try:
            yield obj
        finally:
            self.remove(name)

    def get(self, name: str) -> T:
        """Return the entry called ``name`` or raise a ValueError naming the valid choices."""
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; choose from: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """Registered names in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[tuple[str, T]]:
        return iter(self._entries.items())
