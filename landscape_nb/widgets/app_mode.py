"""What a visitor of a served Explorer may do: where exports go, which schedulers it reaches.

A notebook served as an app (Voilà, or any page that forwards widget messages) lets every
visitor type into the "export to" box and pick the cluster. Two of those controls reach
outside the kernel: a path is a file the server writes, and a scheduler address is a
process whose (pickled) replies the kernel trusts. So, whoever runs the page:

- exports are confined to one directory (``export_dir``, by default the working directory
  when the Explorer is made, which is the notebook's directory under Voilà and JupyterLab):
  a path that resolves outside it (``..``, an absolute path elsewhere, a symbolic link that
  points out) is refused before anything is written, and only the export's own file types
  are written (never ``.ipynb``, ``.py``, ...);
- scheduler addresses are off unless the notebook's code allows them (``allow_addresses=True``
  or a list of addresses); an address given in code as ``client=`` is allowed.

`ExportDir` and `AddressPolicy` carry the rules; the state calls them. See docs/app-mode.md.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..errors import LandscapeError

HTML_SUFFIXES = (".html", ".htm")
IMAGE_SUFFIXES = (".png", ".svg", ".pdf", ".jpeg", ".jpg", ".webp")


@dataclass(frozen=True)
class ExportDir:
    """The directory exports are confined to (resolved, symbolic links followed, when made)."""

    root: Path

    @classmethod
    def make(cls, export_dir: str | os.PathLike | None) -> "ExportDir":
        """``export_dir`` (None: the current working directory), which must be an existing directory."""
        if not isinstance(export_dir, (str, os.PathLike, type(None))):
            raise LandscapeError(f"export_dir={export_dir!r}; expected a directory path (str or Path) or None "
                                 "(the current working directory)")
        raw = Path.cwd() if export_dir is None else Path(export_dir).expanduser()
        if not raw.is_dir():
            raise LandscapeError(f"export_dir={str(raw)!r} is not an existing directory; create it first or pass "
                                 "another directory for the Explorer's exports")
        return cls(raw.resolve())

    def target(self, path: str | os.PathLike, suffixes: tuple[str, ...]) -> Path:
        """Where an export of ``path`` goes: inside the directory, with one of ``suffixes``, or refused.

        A relative ``path`` is taken relative to the directory; the result is resolved (``..``
        and symbolic links followed) before the check, so nothing outside can be reached.

        Raises
        ------
        LandscapeError
            ``path`` is empty, resolves outside the directory, is the directory itself or
            does not end in one of ``suffixes``.
        """
        text = os.fspath(path).strip() if isinstance(path, (str, os.PathLike)) else None
        if not text:
            raise LandscapeError(f"export path {path!r}; expected a file name such as 'landscape.html' "
                                 f"(written in {self.root})")
        given = Path(text).expanduser()
        resolved = (given if given.is_absolute() else self.root / given).resolve()
        if resolved == self.root or self.root not in resolved.parents:
            raise LandscapeError(
                f"export path {text!r} resolves to {str(resolved)!r}, outside the export directory {str(self.root)!r}; "
                "expected a file name inside it, e.g. 'landscape.html' (the notebook's code can pass "
                "Explorer(export_dir=...) to choose another directory)")
        if resolved.suffix.lower() not in suffixes:
            raise LandscapeError(f"export path {text!r} ends in {resolved.suffix or 'no suffix'!r}; expected one of "
                                 f"{', '.join(suffixes)}")
        return resolved


class AddressPolicy:
    """Which scheduler addresses a visitor may connect the kernel to.

    Parameters
    ----------
    allow : bool, str or iterable of str
        False: none (the "scheduler address" cluster is not offered); True: any; a string or
        list: exactly these addresses (compared without surrounding spaces and trailing "/").
    given : str, optional
        An address the notebook's code passed as ``client=``: always allowed.
    """

    def __init__(self, allow: bool | str | Iterable[str] = False, given: str | None = None):
        if isinstance(allow, bool):
            self.any, listed = allow, []
        elif isinstance(allow, str):
            self.any, listed = False, [allow]
        else:
            try:
                listed = list(allow)
            except TypeError:
                listed = None
            if listed is None or not all(isinstance(a, str) for a in listed):
                raise LandscapeError(f"allow_addresses={allow!r}; expected False (no scheduler addresses), True "
                                     "(any) or a list of addresses such as ['tcp://10.0.0.5:8786']")
            self.any = False
        self.allowed = tuple(dict.fromkeys(_norm(a) for a in [*listed, *([given] if given else [])] if _norm(a)))

    @property
    def enabled(self) -> bool:
        """Whether the "scheduler address" cluster is offered at all."""
        return self.any or bool(self.allowed)

    def check(self, address: str) -> str:
        """``address`` (stripped) if a visitor may connect to it; else a `LandscapeError` that says why."""
        address = _norm(address)
        if self.any or address in self.allowed:
            return address
        if not self.allowed:
            raise LandscapeError(
                f"scheduler address {address!r} refused: this Explorer does not connect to scheduler addresses; "
                "expected in-process or a local cluster (the notebook's code can pass "
                "Explorer(allow_addresses=['tcp://host:8786']) to allow some)")
        raise LandscapeError(f"scheduler address {address!r} refused; expected one of {list(self.allowed)}")


def _norm(address: str | None) -> str:
    return (address or "").strip().rstrip("/")
