"""A name -> recipe registry, filled with a plain decorator (timm style)."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from ..errors import LandscapeError, check_choice
from .training import Recipe


@dataclass(frozen=True)
class ZooEntry:
    """A registered example: its name and a one-line description."""

    name: str
    description: str


class Registry:
    """Recipes by name. ``@registry.register`` on ``def resnet20_digits() -> Recipe``
    registers ``"resnet20-digits"``, described by the docstring's first line."""

    def __init__(self) -> None:
        self._recipes: dict[str, Callable[[], Recipe]] = {}
        self._entries: dict[str, ZooEntry] = {}

    def register(self, fn: Callable[[], Recipe]) -> Callable[[], Recipe]:
        name = fn.__name__.replace("_", "-")
        if name in self._recipes:
            raise LandscapeError(
                f"a second zoo entry named {name!r}; expected unique names: "
                "rename one of the registered functions"
            )
        description = (inspect.getdoc(fn) or name).splitlines()[0]
        self._recipes[name] = fn
        self._entries[name] = ZooEntry(name, description)
        return fn

    def names(self) -> list[str]:
        return list(self._recipes)

    def entries(self) -> list[ZooEntry]:
        return list(self._entries.values())

    def entry(self, name: str) -> ZooEntry:
        return self._entries[self.canonical_name(name)]

    def recipe(self, name: str) -> Recipe:
        return self._recipes[self.canonical_name(name)]()

    def canonical_name(self, name: str) -> str:
        """``name`` as registered; case and ``_``/``-`` are forgiven, typos are not."""
        if not isinstance(name, str):
            raise LandscapeError(
                f"a zoo name of type {type(name).__name__}; expected a string, "
                f"one of {self.names()}"
            )
        key = name.strip().lower().replace("_", "-")
        return check_choice("zoo example", key, self.names(), n=3, cutoff=0.4,
                            fix="see landscape_nb.zoo.list() for descriptions")
