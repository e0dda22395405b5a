"""One registry type for every "choose by name" table in tunelab.

Optimizers, adapters, methods, losses, built-in models, the planner's tables and serve
guardrails are all a name → thing mapping that a config key or a CLI flag picks from. They
share :class:`Registry` so that each of them

* refuses a second entry under a name already taken (a plugin never silently replaces a
  built-in),
* answers an unknown name with a :class:`~tunelab.errors.ConfigError` that names the config key
  or flag, lists the valid names and suggests the closest ones, and
* can hold *lazy* entries (``"module:attr"`` or a zero-argument loader) resolved on first
  :meth:`~Registry.get`, so that modules which must stay torch-free (the config, the planner,
  ``tunelab config explain``) can list and validate names without importing the implementation.

The registry itself imports nothing but the standard library and :mod:`tunelab.errors`.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar, overload

from tunelab.errors import ConfigError

T = TypeVar("T")


class DuplicateNameError(ValueError):
    """A name (or alias) is registered twice: a programming error, raised at import time."""


class _Lazy:
    """A not-yet-imported entry: ``"package.module:attr"`` or a zero-argument loader."""

    __slots__ = ("target",)

    def __init__(self, target: str | Callable[[], object]):
        if isinstance(target, str) and target.count(":") != 1:
            raise ValueError(f"lazy registry target {target!r} is not 'package.module:attr'")
        self.target = target

    def load(self) -> object:
        if callable(self.target):
            return self.target()
        module, attr = self.target.split(":")
        return getattr(importlib.import_module(module), attr)


class Registry(Generic[T]):
    """Name → entry table with lazy entries, aliases, duplicate refusal and helpful errors.

    Args:
        kind: what an entry is, for messages ("optimizer", "adapter type", "method").
        key: the config key or CLI flag users set it with, for messages ("training.optimizer").

    Iterating a registry yields its names in registration order (aliases excluded), so
    ``", ".join(registry)`` and ``name in registry`` read as they did with a plain dict.
    """

    def __init__(self, kind: str, *, key: str | None = None):
        self.kind = kind
        self.key = key or kind
        self._entries: dict[str, T | _Lazy] = {}
        self._aliases: dict[str, str] = {}

    # -- registration ---------------------------------------------------------------------
    @overload
    def register(self, name: str, entry: None = None, *, aliases: Iterable[str] = ()) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, entry: T, *, aliases: Iterable[str] = ()) -> T: ...

    def register(self, name: str, entry: T | None = None, *, aliases: Iterable[str] = ()):
        """Add ``entry`` under ``name`` (and ``aliases``); without ``entry``, a decorator.

        Raises:
            DuplicateNameError: ``name`` or an alias is already registered.
        """
        if entry is None:

            def decorate(obj: T) -> T:
                self._add(name, obj, aliases)
                return obj

            return decorate
        self._add(name, entry, aliases)
        return entry

    def lazy(self, name: str, target: str | Callable[[], T], *, aliases: Iterable[str] = ()) -> None:
        """Add an entry imported on first :meth:`get`: ``"package.module:attr"`` or a loader."""
        self._add(name, _Lazy(target), aliases)

    def _add(self, name: str, entry: T | _Lazy, aliases: Iterable[str]) -> None:
        for taken in (name, *aliases):
            if taken in self._entries or taken in self._aliases:
                raise DuplicateNameError(f"{self.kind} '{taken}' is already registered in {self.key}")
        self._entries[name] = entry
        for alias in aliases:
            self._aliases[alias] = name

    # -- lookup ---------------------------------------------------------------------------
    def canonical(self, name: str) -> str:
        """The registered name of ``name`` (itself or the name it is an alias of).

        Raises:
            ConfigError: unknown name, with the valid names and the closest matches.
        """
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise self.unknown(name)

    def get(self, name: str) -> T:
        """The entry registered as ``name`` (an alias works too), imported if it was lazy.

        Raises:
            ConfigError: unknown name, with the valid names and the closest matches.
        """
        key = self.canonical(name)
        entry = self._entries[key]
        if isinstance(entry, _Lazy):
            entry = self._entries[key] = entry.load()  # type: ignore[assignment]
        return entry  # type: ignore[return-value]

    __getitem__ = get

    def names(self) -> list[str]:
        """Registered names in registration order (aliases excluded)."""
        return list(self._entries)

    def aliases(self) -> dict[str, str]:
        """alias → registered name."""
        return dict(self._aliases)

    def suggest(self, name: str, n: int = 3) -> list[str]:
        """Registered names and aliases closest to ``name`` (difflib ratio ≥ 0.6), best first."""
        return difflib.get_close_matches(str(name), [*self._entries, *self._aliases], n=n)

    def unknown(self, name: str, *, key: str | None = None) -> ConfigError:
        """The error for an unknown ``name``: key/flag, valid names, closest matches, a fix line."""
        valid = ", ".join(self._entries) or "none registered"
        close = self.suggest(name)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        fix = f"use {close[0]!r}" if close else f"use one of: {valid}"
        return ConfigError(f"{key or self.key}: unknown {self.kind} {name!r}.{hint} Valid: {valid}\n  fix: {fix}")

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, key={self.key!r}, names={self.names()})"
