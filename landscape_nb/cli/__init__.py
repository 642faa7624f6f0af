"""Command line: ``landscape-nb models | compute | plot | demo``.

Exit status: 0 when every point was computed; 2 with a one-line reason on stderr for bad input
(or an error raised by the user's model, loss or metric); 3 with one line when the run lost its
Dask scheduler or workers (finished tiles stay in ``--store``; rerunning resumes); 130 when
interrupted (SIGINT, Ctrl-C) and 143 when terminated (SIGTERM, e.g. a batch scheduler's
``scancel`` or ``kill``), both keeping finished tiles. ``demo.py`` holds the
demo's job and ``progress.py`` the tqdm progress bar; neither imports this module.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import inspect
import logging
import math
import os
import re
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

from ..errors import LandscapeError, one_line
from ..grid import models_between_points, range_through
from ..schemes import SCHEME_READS, SCHEMES, VOLUME_SCHEMES, check_ndim, make_directions
from .progress import TqdmProgress

logger = logging.getLogger(__name__)

KINDS = ("surface", "contour", "heatmap", "line", "volume", "slices", "eigen_map")
CLIP_HELP = ("cap on the figure's displayed loss (hover shows true values; a line's loss axis stops there; a "
             "volume's outermost isosurface sits there, at the median loss for auto): auto (default: "
             "min + 5·(median − min), so a few diverged points do not flatten the rest; a line rising at most 4 "
             "times that height above its minimum is drawn whole, and none with --log), none (no cap) or a loss "
             "value")
_KINDS_BY_NDIM = {1: ("line",), 2: ("surface", "contour", "heatmap"), 3: ("volume", "slices")}


def parse_grid(text: str) -> tuple[int, ...]:
    from ..grid import MAX_PER_AXIS, MAX_POINTS

    try:
        parts = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        raise LandscapeError(f"--grid {text!r}; expected NX for a line, NXxNY for a plane or NXxNYxNZ for a "
                             "volume, e.g. 51x51") from None
    if len(parts) not in (1, 2, 3):
        raise LandscapeError(f"--grid {text!r}; expected NX, NXxNY or NXxNYxNZ, e.g. 51, 51x31 or 21x21x21")
    if min(parts) < 2:
        raise LandscapeError(f"--grid {text!r} has an axis of {min(parts)} point(s); expected at least 2 points "
                             "per axis (the range's two ends), e.g. 51 or 51x51")
    if max(parts) > MAX_PER_AXIS or math.prod(parts) > MAX_POINTS:
        raise LandscapeError(f"--grid {text!r} has {math.prod(parts)} points; expected at most {MAX_PER_AXIS} per "
                             f"axis and {MAX_POINTS} in all: use a coarser grid, or zoom into a smaller --range")
    return parts


def check_tile_fits(tile, grid: tuple[int, ...], text: str) -> None:
    """Refuse a ``--tile`` with more sizes than the grid has axes (ROWSxCOLS on a line needs 1 row)."""
    if tile is None or isinstance(tile, int):
        return
    n = len(grid)
    if len(tile) > max(n, 2) or (n == 1 and tile[0] != 1):
        want = {1: "N (points per tile) or 1xN", 2: "N or ROWSxCOLS, e.g. 8x8",
                3: "N, ROWSxCOLS (one slice deep) or DEPTHxROWSxCOLS, e.g. 4x8x8"}[n]
        raise LandscapeError(f"--tile {text} does not fit the {n}D --grid {'x'.join(map(str, grid))}; expected {want}")


def parse_range(text: str, name: str) -> tuple[float, float]:
    try:
        a, b = (float(p) for p in text.split(":"))
    except ValueError:
        parts = text.split(":")
        count = (f" (the number of points goes in --grid, e.g. {parts[0]}:{parts[1]} with --grid {parts[2]}, not "
                 "the reference's START:STOP:NUM)") if len(parts) == 3 and parts[2].strip().isdigit() else ""
        raise LandscapeError(f"{name} {text!r}; expected START:STOP, e.g. -1:1{count}") from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise LandscapeError(f"{name} {text!r} is not finite; expected two finite numbers START:STOP, e.g. -1:1")
    if not a < b:
        example = f"{b:g}:{a:g}" if a != b else "-1:1"
        raise LandscapeError(f"{name} {text!r} is empty or reversed; expected START < STOP, e.g. {example}")
    return a, b


def parse_tile(text: str | None):
    if text is None:
        return None
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise LandscapeError(f"--tile {text!r}; expected N, ROWSxCOLS or DEPTHxROWSxCOLS, e.g. 8x8") from None
    if min(parts) < 1:
        raise LandscapeError(f"--tile {text!r}; expected positive sizes, e.g. 8x8 (or leave --tile out for the default)")
    return parts[0] if len(parts) == 1 else tuple(parts)


def parse_client(text: str | None):
    """``--client`` as ``compute_surface``'s ``client``: None in-process, else the spelling given
    (checked by ``cluster.parse_client``, the one reader of client spellings)."""
    if text is None:
        return None
    from ..cluster import parse_client as read_client

    try:
        choice = read_client(text)
    except LandscapeError:
        raise LandscapeError(f"--client {text!r}; expected none (this process), local (worker processes here), "
                             "cuda (one worker per GPU) or a scheduler address such as tcp://host:8786") from None
    return None if choice.kind == "in-process" else (choice.address or choice.kind)


def check_workers(args):
    """``--client`` as `parse_client` reads it, refusing a ``--workers`` it would ignore or could not start."""
    client = parse_client(args.client)
    if args.workers is None:
        return client
    if client is None:
        raise LandscapeError(f"--workers {args.workers} was given with --client {args.client}, where tiles run in "
                             "this process; add --client local for worker processes (or drop --workers)")
    if client not in ("local", "cuda"):
        raise LandscapeError(f"--workers {args.workers} was given with --client {args.client}, a running scheduler "
                             "whose cluster already has its workers; start more workers there (dask worker "
                             f"{args.client}), or drop --workers")
    if args.workers < 1:
        raise LandscapeError(f"--workers {args.workers}; expected a positive number of worker processes, e.g. "
                             "--workers 2 (or leave it out: one per core, up to 8)")
    from ..cluster import _cpu_count  # the count local_cluster's default "one per core" uses (CPU affinity)

    cores = _cpu_count()
    if client == "local" and args.workers > 4 * cores:  # each is a process with its own copy of the model
        raise LandscapeError(f"--workers {args.workers} on a machine with {cores} CPU core(s); expected at most "
                             f"{4 * cores} (each worker is a process with its own model and torch threads, so more "
                             "than the cores gain nothing), e.g. leave --workers out: one per core, up to 8")
    return client


def load_model_spec(name: str, split: str | None = None):
    """A zoo name, or ``module:function`` returning (model, data) or (model, data, loss_fn).

    The module is imported from ``sys.path``; ``main`` puts the current directory on it. A
    function with a ``split`` parameter is called with ``split=`` (default "test"); a ``--split``
    given for one without is refused (it could not honour it). A zoo model's split defaults to "test".
    Returns (name, model, data, loss_fn, zoo example or None, the split the data are: None for a function
    without ``split``, whose data's split is not known).
    """
    if not is_zoo_name(name):
        mod_name, fn_name = name.split(":", 1)
        if not (mod_name and fn_name):
            raise LandscapeError(f"model {name!r}; expected module:function with both parts, e.g. mymodels:build "
                                 "for def build() in mymodels.py in the current directory")
        try:
            fn = getattr(importlib.import_module(mod_name), fn_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or mod_name == exc.name or mod_name.startswith(exc.name + "."):
                raise _cannot_load(name, mod_name, exc) from None
            # the module was found and imports one that is not installed: where, and what to install (trial s58:
            # "cannot load ... importable from the current directory", of a module that was)
            raise LandscapeError(f"importing {mod_name} (for {name}) raised ModuleNotFoundError: {exc}"
                                 f"{_raised_at(exc)}; expected the modules it imports to be installed here: "
                                 f"install {exc.name.split('.')[0]} in this environment (pip install ...)") from exc
        except (ImportError, AttributeError, ValueError, TypeError) as exc:  # TypeError: a relative name (./m)
            raise _cannot_load(name, mod_name, exc) from None
        except SyntaxError as exc:  # a 20-line traceback of importlib's and exit 1 (trial s34)
            raise LandscapeError(f"cannot load {name!r}: {type(exc).__name__} in {exc.filename}, line {exc.lineno}: "
                                 f"{exc.msg}; fix the module and rerun") from None
        except Exception as exc:  # its module-level code raised: the user's own, one line, the original chained
            raise LandscapeError(f"importing {mod_name} (for {name}) raised {type(exc).__name__}: "
                                 f"{_shortened(exc)}{_raised_at(exc)}") from exc
        if not callable(fn):
            raise LandscapeError(f"{name} is of type {type(fn).__name__}, not a function; expected module:function naming "
                                 "a function that returns (model, data) or (model, data, loss_fn)")
        takes_split = "split" in inspect.signature(fn).parameters
        if split is not None and not takes_split:  # --split is honoured by functions taking `split`, else refused
            raise LandscapeError(
                f"--split {split} was given but {name} takes no `split` argument, so it cannot choose the split; "
                f"define it as def {fn_name}(split='test') returning that split's data, or drop --split"
            )
        try:
            out = fn(split=split or "test") if takes_split else fn()
        except Exception as exc:  # the user's own function: one line, the original chained
            raise LandscapeError(f"{name}() raised {type(exc).__name__}: {_shortened(exc)}{_raised_at(exc)}; "
                                 "expected it to return (model, data[, loss_fn])") from exc
        if not isinstance(out, tuple) or len(out) not in (2, 3):
            got = f"a tuple of {len(out)} item(s)" if isinstance(out, tuple) else f"a {type(out).__name__}"
            raise LandscapeError(f"{name} returned {got}; expected (model, data[, loss_fn])")
        model, data, loss_fn = (*out, None)[:3]
        from torch import Tensor, nn

        if isinstance(data, Tensor) and isinstance(loss_fn, Tensor):  # (model, x, y): y read as the loss (s53b)
            raise LandscapeError(f"{name} returned (model, Tensor, Tensor), three items, the third read as loss_fn; "
                                 "expected (model, data[, loss_fn]) with the data one item: return (model, (x, y))")

        if not isinstance(model, nn.Module):
            raise LandscapeError(f"{name} returned {type(model).__name__} as the model (first item); expected (model, data[, loss_fn]) "
                                 "with the model a torch.nn.Module")
        return name, model, data, loss_fn, None, (split or "test") if takes_split else None
    from .. import zoo

    if name not in zoo.names() and _is_module(name):
        raise LandscapeError(f"{name!r} is an importable module, not a zoo name; expected module:function, the "
                             f"function returning (model, data) or (model, data, loss_fn), e.g. {name}:build")
    if name not in zoo.names() and (name.endswith(".py") or "/" in name or os.sep in name):
        stem = Path(name).stem
        raise LandscapeError(f"model {name!r} is a file path, not a zoo name or module:function; name the module as "
                             f"Python imports it and the function in it, e.g. {stem}:make for def make() in "
                             f"{Path(name).name}, run from its folder (or with the folder on PYTHONPATH)")
    ex = zoo.load(name)
    split = split or "test"
    if split not in ("train", "test"):
        raise LandscapeError(f"--split {split!r}; expected 'train' or 'test'")
    return name, ex.model, getattr(ex, split), ex.loss_fn, ex, split


def is_zoo_name(name: str) -> bool:
    """Whether the model argument names a zoo model rather than a ``module:function``."""
    return ":" not in name or name.startswith(("tcp:", "tls:"))


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def parse_target_key(text: str | None):
    """``--target-key`` as ``compute_surface``'s ``target_key``: an integer is a position in tuple batches
    (``-1`` the last), anything else the dict key of the targets; None: not given (the API's default,
    ``"labels"``, or the last of a tuple). See ``data.read_data``."""
    if text is None:
        return None
    if not text.strip():
        raise LandscapeError(f"--target-key {text!r} is empty; expected the key of the targets in your data's dict "
                             "batches, e.g. --target-key labels, or their position in tuple batches, e.g. "
                             "--target-key 1")
    try:
        return int(text)
    except ValueError:
        return text


#: the reference implementation's surface files (tomgoldstein/loss-landscape); ours are read by its plot_2D.py
H5_SUFFIXES = (".h5", ".hdf5")


def check_exports(args, ndim: int) -> None:
    """Refuse, before the run, an ``--html``/``--h5``/``--vtk`` file that could not be written: a directory,
    a folder under a file, a suffix its readers do not take, a volume for the reference's 1D/2D layout, or
    no h5py."""
    from ..plot.export import prepare_path

    if args.html:
        prepare_path(args.html, flag="--html")  # a directory is named as such first
        check_html_name(args.html)
    if args.h5:
        prepare_path(args.h5, "surface.h5", "--h5")
        if Path(args.h5).suffix.lower() not in H5_SUFFIXES:
            raise LandscapeError(f"--h5 {args.h5!r}; expected a file name ending in .h5 (the reference "
                                 "implementation's surface-file layout, HDF5), e.g. --h5 surface.h5")
        if ndim == 3:
            volume = getattr(args, "volume", None)
            raise LandscapeError(f"--h5 {args.h5} was given for {volume or f'a 3D --grid {args.grid}'}; the "
                                 "reference's surface files hold a line or a plane: use --vtk FILE.vtk for a volume"
                                 + ("" if volume else " (or a 1D/2D --grid)"))
        if importlib.util.find_spec("h5py") is None:
            raise LandscapeError("--h5 needs h5py, which is not installed; install it with "
                                 "`pip install landscape_nb[h5]` (or drop --h5)")
    if args.vtk:
        prepare_path(args.vtk, "surface.vtk", "--vtk")
        if Path(args.vtk).suffix.lower() != ".vtk":
            raise LandscapeError(f"--vtk {args.vtk!r}; expected a file name ending in .vtk (legacy VTK, which "
                                 "ParaView reads only under that suffix), e.g. --vtk surface.vtk")


def write_exports(surf, args, name: str) -> None:
    """The figure and files asked for by ``--html``, ``--h5`` and ``--vtk``, each announced on stdout.

    ``--h5`` is ``reference.save_reference_surface`` with the loss under ``<split>_loss`` (``--split``,
    default test); ``--vtk`` is ``export_vtk``, its height log10 of the loss with ``--log``."""
    from ..plot._common import non_positive_range
    from ..plot.export import export_html, export_vtk
    from ..reference import save_reference_surface

    def h5():
        split = args.split or "test"
        print(f"wrote {save_reference_surface(surf, args.h5, split=split)} (the loss as {split}_loss)")
        ny, nx = surf.loss.shape if surf.loss.ndim == 2 else (0, 0)
        if nx != ny:  # the reference's (nx, ny) array filled in meshgrid order: [i, j] is not (x_i, y_j)
            print(f"landscape-nb: note: {args.h5} holds {split}_loss as the reference's plot_surface.py writes it, "
                  f"of shape ({nx}, {ny}) = (x points, y points) but filled x fastest (its meshgrid order), so "
                  f"{split}_loss[i, j] is not the loss at (x[i], y[j]); {split}_loss[()].ravel().reshape({ny}, {nx})"
                  "[j, i] is; `landscape-nb plot` and lnb.load_reference_surface read it so (the reference's "
                  "plot_2D.py draws square grids only)", file=sys.stderr)
        if surf.y is None and split != "train":  # plot_1D.py asserts 'train_loss' and reads train_acc
            how = ("this store holds the line on the test split; compute it on the train split for that "
                   "(landscape-nb compute ... --split train; " if getattr(args, "from_plot", False) else
                   "rerun with --split train for it (")
            print(f"landscape-nb: note: the reference's plot_1D.py reads train_loss and train_acc, which {args.h5} "
                  f"does not hold; {how}your module:function then needs a split "
                  "parameter, def make(split='test'); the same --store resumes only the same split)",
                  file=sys.stderr)

    def vtk():  # its gaps said by export_vtk's warning (s36: a plateau at the top, with no word)
        print(f"wrote {export_vtk(surf, args.vtk, log=args.log)}")

    def html():
        figure = figure_for(surf, args.kind, log_scale=args.log, clip=parse_clip(args.clip))  # run_title's
        print(f"wrote {export_html(figure, args.html)}")

    # each output on its own: one refused (an --h5 of losses below 0, a --clip below every loss) keeps the others
    written, refused = [], []
    bounds = non_positive_range([surf.loss]) if args.log and (args.html or args.vtk) else None
    if bounds is not None:  # a blank figure, exit 0
        refused.append(LandscapeError(
            f"--log: every loss is ≤ 0 (from {bounds[0]:.4g} to {bounds[1]:.4g}), so a log scale shows none "
            "of them (a blank figure, every VTK point invalid); drop --log for this loss"))
        args.html = args.vtk = None
    for flag, path, write in (("--h5", args.h5, h5), ("--vtk", args.vtk, vtk), ("--html", args.html, html)):
        if path:
            try:
                write()
                written.append(f"{flag} {path}")
            except LandscapeError as exc:
                refused.append(exc)
            except OSError as exc:  # the folder made read-only, or the disk full, since the run began
                refused.append(LandscapeError(f"cannot write {flag} {path} ({exc.strerror or exc}); choose "
                                              "another path"))
    if refused:
        kept = f" ({' and '.join(written)} {'were' if len(written) > 1 else 'was'} written)" if written else ""
        error = LandscapeError("; ".join(str(exc) for exc in refused) + kept)
        error.written = written
        raise error from refused[0]
    args.done = True  # what is left (a note, closing workers) loses nothing: a signal from here on is no failure


def check_html_name(path: str) -> None:
    """Refuse an ``--html`` file name that does not end in .html/.htm (``out.png`` got an HTML page)."""
    if Path(path).suffix.lower() not in (".html", ".htm"):
        raise LandscapeError(f"--html {path!r}; expected a file name ending in .html (the figure is a standalone "
                             "HTML page; for a PNG or SVG, use lnb.export_image(figure, 'out.png') from Python)")


def check_kind(kind: str | None, ndim: int, eigen: bool = False, log: bool = False, path: bool = False) -> str:
    """The figure kind for a surface of ``ndim`` dimensions (``kind`` or the default; ``eigen``: an
    eigen-map, whose default is its ratio map; ``path``: a PCA plane with its training path, whose default
    is the contour with the path, Li et al.'s Fig. 9); refuse one that cannot draw it, or draw it with a
    ``log`` scale."""
    fits = ("eigen_map",) + _KINDS_BY_NDIM[ndim] if eigen and ndim in (1, 2) else _KINDS_BY_NDIM[ndim]
    kind = kind or ("contour" if path and "contour" in fits else fits[0])
    if kind == "eigen_map" and log:
        raise LandscapeError("--log does not apply to --kind eigen_map (a ratio map with loss contours, the figure "
                             "of --quantity hessian); drop --log, or add --kind surface/contour/heatmap for the "
                             "eigen-map's loss")
    if kind == "eigen_map" and not eigen and ndim in (1, 2):  # it draws a line or plane: of eigenvalues (s53)
        raise LandscapeError("--kind eigen_map draws the eigenvalues of a --quantity hessian run, and this surface "
                             f"holds the loss only; expected one of {', '.join(fits)} (or leave --kind out for "
                             f"{fits[0]}), or compute an eigen-map: landscape-nb compute ... --quantity hessian")
    if kind not in fits:
        shape = {1: "line", 2: "plane", 3: "volume"}[ndim]
        raise LandscapeError(f"--kind {kind} does not draw a {ndim}D {shape}; expected one of "
                             f"{', '.join(fits)} (or leave --kind out for {fits[0]})")
    return kind


def parse_clip(text: str | None):
    """``--clip``: None (automatic cap, the figures' default), False (``none``: no cap) or a loss value."""
    if text is None or text.strip().lower() == "auto":
        return None
    if text.strip().lower() in ("none", "off", "no"):
        return False
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):  # a loss below 0 (a shifted or log-likelihood loss) may be capped below 0 too
        raise LandscapeError(f"--clip {text!r}; expected auto (cap the displayed loss at min + 5·(median − min)), "
                             "none (no cap: every value as it is) or a loss value to cap at, e.g. --clip 3")
    return value


def check_clip_kind(kind: str, clip) -> None:
    """Refuse ``--clip`` for a figure that has no cap to set: an eigen-map draws its ratio."""
    if clip is not None and kind == "eigen_map":
        raise LandscapeError("--clip was given for an eigen-map figure, which has no cap: an eigen-map draws "
                             "|λmin/λmax|, not the loss; drop --clip")


def figure_for(surface, kind: str | None, *, log_scale: bool = False, title: str | None = None, clip=None):
    """The HTML figure of ``surface`` for ``--kind`` (None: the surface's default), titled ``title`` or, by default,
    by `plot.figures.run_title` for the kind drawn."""
    from .. import plot
    from ..surface import metric_splits

    path = plot.figures.provenance_path(surface)  # a PCA plane's training path, each checkpoint by its file
    kind = check_kind(kind, surface.ndim, eigen="eig_ratio" in surface.metrics, log=log_scale, path=path is not None)
    check_clip_kind(kind, clip)
    title = plot.figures.run_title(surface, drawn=kind) if title is None else title  # an eigen-map drawn as one
    if kind == "contour" and path is not None:  # the PCA plane's training path on it (Li et al. 2018, Fig. 9)
        return plot.pca_contour(surface, path, log=log_scale, title=title, clip=clip)
    if kind == "eigen_map":
        return plot.eigen_map(surface, title=title)
    if kind == "slices":  # contours at the first, middle and last z
        fig = plot.volume_slices(surface, "z", log=log_scale, clip=clip)
        return fig.update_layout(title=title) if title else fig
    if kind == "line" and clip is None and metric_splits(surface.metrics):
        return plot.line_splits(surface, log=log_scale, title=title)  # every split: the split's train loss alone
    if kind == "line":  # was drawn, named "loss" (trial s42); its loss axis capped, not its values; the cap's note
        fig = plot.line(surface, log=log_scale, title=title, clip=clip)  # in the CLI's words
        for note in fig.layout.annotations:
            note.text = _metric_note_words(note.text.replace(f"({plot.figures.CLIP_OFF} shows", "(--clip none shows"),
                                           eigen="eig_ratio" in surface.metrics)
        return fig
    return getattr(plot, kind)(surface, log=log_scale, title=title, clip=clip)


def _metric_note_words(text: str, *, eigen: bool) -> str:
    """A line's note on the metrics it leaves out (`plot._common.note_undrawn_metrics`) in the CLI's words: it told
    a shell user to "pass metric=..." and that "plot.line_splits draws" the splits (s58)."""
    import re

    text = re.sub(r'\(pass metric="([^"]*)" to draw one on the right axis\)',  # a line's: its eigenvalues
                  "(--kind eigen_map draws λmax and λmin, the ratio in its hover)" if eigen else
                  r'(from Python, lnb.plot.line(lnb.load_surface(STORE), metric="\1") draws one on the right axis)',
                  text)
    return text.replace("plot.line_splits draws them", "drop --clip to draw every split")


#: file and directory flags, with an example of each for the message refusing an empty one
_PATH_FLAGS = {"--store": "runs/r.zarr", "--html": "surface.html", "--h5": "surface.h5", "--vtk": "surface.vtk",
               "--dir-file": "dirs.h5", "--model-file2": "epoch90.pt", "--model-file3": "epoch45.pt",
               "--checkpoints": "ckpt/e00.pt ckpt/e10.pt ckpt/e20.pt", "--out": "demo_out", "SOURCE": "runs/r.zarr"}


def check_paths_not_empty(args, flags) -> None:
    """Refuse an empty or blank file name (``--model-file2 "$CKPT"`` with ``CKPT`` unset): read as not given, it
    computed random directions, or drew no figure, without a word."""
    for flag in flags:
        value = getattr(args, "store" if flag == "SOURCE" else flag.lstrip("-").replace("-", "_"), None)
        for v in value if isinstance(value, list) else [value]:
            if v is not None and not v.strip():
                shown = "the SOURCE argument" if flag == "SOURCE" else flag
                raise LandscapeError(f"{shown} {v!r} is empty; expected a file path (an unset shell variable?), e.g. "
                                     f"{'' if flag == 'SOURCE' else flag + ' '}{_PATH_FLAGS[flag]}")


#: which of --norm, --ignore and --seed each direction scheme reads (None: directions from --dir-file)
_SCHEME_READS = {**SCHEME_READS, None: ()}
_SCHEME_DEFAULTS = {"norm": "filter", "ignore": "biasbn", "seed": 0}


def check_direction_flags(args, ndim: int) -> str | None:
    """The direction scheme the flags ask for (None: the directions in ``--dir-file``), before the model loads.

    ``--model-file2`` implies ``interpolate`` (with ``--model-file3``, ``plane3``) and ``--checkpoints``
    ``pca``, as the reference's ``--model_file2``/``--model_file3`` do; flags that could not all be
    honoured together, or that the scheme would ignore (``--norm`` for an interpolation, ``--dir-type``
    without a file), are refused. Afterwards ``args.norm``/``ignore``/``seed`` hold their defaults
    where not given (the default store's name hashes them)."""
    files = [f for f, v in (("--model-file2", args.model_file2), ("--model-file3", args.model_file3),
                            ("--checkpoints", args.checkpoints)) if v]
    if args.dir_type and not args.dir_file:
        raise LandscapeError(f"--dir-type {args.dir_type} says what a reference direction file lists; it was given "
                             "without --dir-file: add --dir-file FILE.h5 (or drop --dir-type)")
    if args.dir_file:
        if files or args.directions:
            other = files[0] if files else f"--directions {args.directions}"
            raise LandscapeError(f"--dir-file {args.dir_file} and {other} were both given; the file holds the "
                                 f"directions, so {other} could not be used: give one of them")
        if args.dir_type and Path(args.dir_file).suffix.lower() not in H5_SUFFIXES:
            raise LandscapeError(f"--dir-type {args.dir_type} was given with --dir-file {args.dir_file}, which is not "
                                 "a reference .h5 file (only those list 'weights' or 'states'): drop --dir-type")
        scheme = None
    elif args.model_file3 and not args.model_file2:
        raise LandscapeError(f"--model-file3 {args.model_file3} was given without --model-file2; the plane through "
                             "three models needs both: --model-file2 B.pt --model-file3 C.pt (the model is at (0, 0))")
    elif args.model_file2:
        scheme = "plane3" if args.model_file3 else "interpolate"
        given = ("--model-file2 and --model-file3 give the plane through three models ('plane3')" if args.model_file3
                 else "--model-file2 gives the line from the model to that checkpoint ('interpolate')")
        if args.directions == "plane3" and not args.model_file3 and not args.checkpoints:
            raise LandscapeError(f"--directions plane3 is the plane through three models, and only --model-file2 "
                                 f"{args.model_file2} was given: add --model-file3 C.pt (and a 2D --grid, e.g. "
                                 "31x31), or drop --directions for the line to that model")
        if args.checkpoints or args.directions not in (None, scheme):
            other = "--checkpoints" if args.checkpoints else f"--directions {args.directions}"
            raise LandscapeError(f"{other} was given, but {given}: drop {other.split()[0]} or the model files")
        if ndim != (2 if args.model_file3 else 1):
            raise LandscapeError(f"{given}, but --grid {args.grid} is {ndim}D: use "
                                 + ("a 2D --grid, e.g. 31x31" if args.model_file3 else
                                    "a 1D --grid, e.g. 51 (for a plane through three models add --model-file3)"))
    elif args.checkpoints:
        scheme = "pca"
        if args.directions not in (None, "pca"):
            raise LandscapeError(f"--checkpoints was given with --directions {args.directions}; the checkpoints are "
                                 "for --directions pca (the plane of the training trajectory): drop one of them")
    else:
        scheme = args.directions or "random"
    if scheme is not None:
        check_ndim(scheme, ndim)
    what = f"--directions {scheme}" if scheme else f"--dir-file {args.dir_file} (its directions are used as saved)"
    for flag in ("norm", "ignore", "seed"):
        given = getattr(args, flag)
        if given is not None and flag not in _SCHEME_READS[scheme]:
            users = [k for k, v in _SCHEME_READS.items() if k and flag in v]
            raise LandscapeError(f"--{flag} {given} does not apply to {what}; it is read by --directions "
                                 f"{', '.join(users[:-1])}{' and ' if len(users) > 1 else ''}{users[-1]} only: "
                                 f"drop --{flag}")
        if given is None:
            setattr(args, flag, _SCHEME_DEFAULTS[flag])
    args.directions = scheme
    return scheme


def cli_directions(args, scheme: str | None, model, ex, data, loss_fn, ndim: int, keys: dict):
    """``(centre model, Directions)`` for the checked flags: a scheme (``schemes.make_directions``, with
    the models of ``--model-file2``/``--model-file3`` and the ``--checkpoints``), or ``--dir-file``."""
    from ..model_paths import model_from_state_dict
    from ..trajectory import in_training_order, load_state_dict_file

    if args.checkpoints:  # a glob's order put right before the files are recorded, and before a message names
        args.checkpoints, _ = in_training_order(args.checkpoints, "landscape_nb.pca_directions")  # "checkpoint k"
    files = {k: getattr(args, k) for k in ("model_file2", "model_file3", "checkpoints", "dir_file") if getattr(args, k)}
    if scheme is None:  # the file names go in the provenance: a refused resume names the one that changed
        return model, directions_from_file(args.dir_file, model, args.dir_type, ndim).with_provenance(**files)
    others = [model_from_state_dict(model, load_state_dict_file(path, f"--{flag} {path}"), f"--{flag} {path}")
              for flag, path in (("model-file2", args.model_file2), ("model-file3", args.model_file3)) if path]
    from ..evaluate import EvalSettings

    ignore = None if args.ignore == "none" else args.ignore
    # a PCA plane's checkpoints, evaluated as the surface's points are: their true losses in its figure
    path_settings = EvalSettings(mode=args.mode, max_samples=args.max_samples, **keys)
    try:
        base, d = make_directions(scheme, model, ex, ndim=ndim, norm=args.norm, ignore=ignore, seed=args.seed,
                                  data=None if ex is not None else data, loss_fn=loss_fn, others=others or None,
                                  trajectory=args.checkpoints, path_data=data, path_settings=path_settings, **keys)
    except LandscapeError as exc:  # plane_directions' models a, b, c are the command's model and files
        text = str(exc)
        if others and text.startswith(("model b ", "model c ", "models b and c ", "model b:", "model c:")):
            both = f"--model-file2 {args.model_file2} and --model-file3 {args.model_file3}"
            for api, flag in (("models b and c", both), ("model b", f"--model-file2 {args.model_file2}"),
                              ("model c", f"--model-file3 {args.model_file3}"), ("model a (the centre)", "the model"),
                              ("through a", "through the model"), ("a → b and a → c", "the two axes"),
                              ("a → b", "to it"), ("a → c", "to it"),
                              ("another checkpoint for c", "another checkpoint for --model-file3"),
                              (" (or interpolation_direction(a, b) for the line)", "")):
                text = text.replace(api, flag)
            raise LandscapeError(text) from None
        raise
    given = [p for p in (args.model_file2, args.model_file3) if p]
    ends = [Path(p).name for p in given]
    if len(set(ends)) < len(ends):  # r1/ckpt.pt and r2/ckpt.pt: marks and axes told apart by the paths given
        ends = [str(p) for p in given]
    # the axes and marks name the model as given (a zoo name, module:function) and the files (the messages above,
    # their flags): the first was called "model" (trial s50)
    first = args.model if args.model not in ends else "model"
    if others and d.scheme == "interpolate":
        d = d.with_provenance(x_label=f"interpolation {first} → {ends[0]}", models=[first, ends[0]])
    elif others and d.scheme == "plane3":
        d = d.with_provenance(x_label=f"{first} → {ends[0]}", y_label=f"{first} → {ends[1]}", models=[first, *ends])
    return base, d.with_provenance(**files)


def directions_from_file(path: str, model, dir_type: str | None, ndim: int):
    """``--dir-file``: a reference direction file (``.h5``, ``reference.load_reference_directions``), a
    ``Directions.save`` file (``.npz``) or the directions kept in a store (a ``.zarr`` directory,
    ``store.load_directions``); refused unless it holds ``ndim`` directions for this model."""
    from ..directions import Directions, as_directions
    from ..reference import load_reference_directions
    from ..store import load_directions

    p = Path(path)
    if not p.exists():
        raise LandscapeError(f"--dir-file {path}: no such file or directory; expected a reference direction file "
                             "(.h5), one written by Directions.save (.npz) or a landscape store (.zarr)")
    if p.is_dir():
        d = load_directions(p)
    elif p.suffix.lower() in H5_SUFFIXES:
        d = load_reference_directions(model, p, dir_type=dir_type)
    elif p.suffix.lower() == ".npz":
        d = Directions.load(p)
    else:
        raise LandscapeError(f"--dir-file {path!r}; expected a reference direction file (.h5, as plot_surface.py "
                             "--dir_file takes), one written by Directions.save (.npz) or a landscape store "
                             "directory (.zarr)")
    if d.n != ndim:
        shape = {1: "they give a line: --grid 51", 2: "they give a plane: --grid 31x31",
                 3: "they give a volume: --grid 21x21x21"}.get(d.n, "a grid has 1 to 3 axes: save the ones to draw, "
                                                                    "Directions.select([0, 1]).save(...)")
        raise LandscapeError(f"--dir-file {path} holds {d.n} direction(s), but --grid is {ndim}D; {shape}")
    try:
        return as_directions(model, d)  # refuses directions made for another architecture, naming the difference
    except LandscapeError as exc:
        raise LandscapeError(f"--dir-file {path}: {exc}") from None


# ------------------------------------------------------------ commands ----

def cmd_models(args) -> int:
    from .. import zoo

    for entry in zoo.list():
        print(f"{entry.name:<24} {entry.description}")
    return 0


def cmd_compute(args) -> int:
    from ..compute import compute_surface, diverged_at_the_model, points_summary
    from ..plot.figures import path_outside

    check_paths_not_empty(args, ("--store", "--html", "--h5", "--vtk", "--dir-file", "--model-file2", "--model-file3",
                                 "--checkpoints"))
    grid = parse_grid(args.grid)
    eigen = args.quantity == "hessian"
    if eigen and len(grid) == 3:
        raise LandscapeError(f"--quantity hessian (an eigen-map) takes a 1D or 2D --grid; got --grid {args.grid}: use "
                             "e.g. --grid 11x11 or --grid 21 (each point costs tens of Hessian-vector products)")
    if args.tol is not None and not eigen:
        raise LandscapeError(f"--tol {args.tol} is the eigen-map's Lanczos tolerance; add --quantity hessian (or drop "
                             "--tol)")
    if args.tol is not None and not 0 <= args.tol < 1:  # said as --tol, not the API's tol=5.0 (trial s53)
        raise LandscapeError(f"--tol {args.tol:g}; expected a relative tolerance from 0 up to, not including, 1, e.g. "
                             "--tol 1e-3 (the default; smaller is more exact and slower)")
    if eigen and args.mode == "bn-recompute":  # said in flags, not as quantity='hessian' ... mode='eval' (trial s53)
        raise LandscapeError(
            "--quantity hessian with --mode bn-recompute: the loss at each point re-estimates the BatchNorm "
            "statistics there, so it depends on the weights through them, while the Hessian would hold them fixed "
            "and give another function's eigenvalues; use --mode eval (the Hessian of the loss with the model's "
            "running statistics)")
    kind = check_kind(args.kind, len(grid), eigen, log=args.log and bool(args.html))  # before the run: not after it
    clip = parse_clip(args.clip)  # a bad --clip, or one for a figure without a cap, is refused before the run
    if args.html:
        check_clip_kind(kind, clip)
    if (args.kind and not args.html) or (args.log and not (args.html or args.vtk)) or (args.clip and not args.html):
        flag = (f"--kind {args.kind}" if args.kind and not args.html else
                f"--clip {args.clip}" if args.clip and not args.html else "--log")
        where = "--html" if flag != "--log" else "--html or --vtk"
        raise LandscapeError(f"{flag} was given without {where}, so no figure would be drawn; add --html FILE "
                             f"(or draw a stored run later with `landscape-nb plot STORE {flag} --html FILE`)")
    target_key = parse_target_key(args.target_key)
    client = check_workers(args)
    check_tile_fits(parse_tile(args.tile), grid, args.tile)
    scheme = check_direction_flags(args, len(grid))
    if args.max_samples is not None and args.max_samples < 1:
        raise LandscapeError(f"--max-samples {args.max_samples}; expected a positive number of samples, e.g. "
                             "--max-samples 512 (or leave it out for all of them)")
    for flag, value in (("--range", args.range), ("--yrange", args.yrange), ("--zrange", args.zrange)):
        if value is not None:  # a malformed range is refused before the model loads
            parse_range(value, flag)
    for flag, value, needs in (("--yrange", args.yrange, 2), ("--zrange", args.zrange, 3)):
        if value is not None and len(grid) < needs:
            raise LandscapeError(f"{flag} {value} was given for a {len(grid)}D --grid {args.grid}; it needs a grid of "
                                 f"{needs} numbers, e.g. --grid {'x'.join(['21'] * needs)} (or drop {flag})")
    check_exports(args, len(grid))
    outputs = bool(args.html or args.h5 or args.vtk)
    if args.no_store and (args.store or not outputs):
        raise LandscapeError("--no-store was given with --store" if args.store else
                             "--no-store was given without --html, --h5 or --vtk, so the run would keep nothing; "
                             "add an output (or drop --no-store: the points are then kept in runs/)")
    if not args.store and not args.no_store:  # every run keeps its points: a refused figure or a Ctrl-C loses none
        args.store = args.default_store = default_store(args)
        folder = Path(args.store).parent
        if outputs and not os.access(folder if folder.is_dir() else Path.cwd(), os.W_OK):
            print(f"landscape-nb: note: {folder}{os.sep} cannot be written here, so the points are kept only in the "
                  "outputs (--store DIR keeps them elsewhere)", file=sys.stderr)
            args.store = args.default_store = None
    if target_key is not None and is_zoo_name(args.model):
        raise LandscapeError(f"--target-key {args.target_key} was given with the zoo model {args.model}, whose data "
                             "are (inputs, targets) pairs; it is for your own module:function's data in dict batches "
                             "or tuples: drop --target-key")
    # the split goes in the store too: `plot STORE` titles say it
    name, model, data, loss_fn, ex, split = load_model_spec(args.model, args.split)
    # the CLI imports torch where a model loads, not for --help
    from torch import Tensor

    pairs = isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data)
    if args.html and clip is not None and clip is not False and clip <= 0 and (
            ex is not None or loss_fn is None and target_key is None and pairs):  # not a model's own outputs.loss
        raise LandscapeError(  # cross-entropy (the default and the zoo's) is ≥ 0: the figure would be refused after
            f"--clip {args.clip} is at or below 0, where the cross-entropy loss never is, so it would cap every "  # the
            "value and the figure would be refused; give a cap above the losses, e.g. --clip 3, or leave --clip out "  # run
            "for the automatic one")  # (s55: with --no-store nothing computed was kept)
    keys = {} if target_key is None else {"target_key": target_key}  # None would mean "no targets"
    model, d = cli_directions(args, scheme, model, ex, data, loss_fn, len(grid), keys)
    # schemes whose coordinates are not ±1-sized (pca, interpolate, plane3) suggest a range
    x_default = ":".join(str(v) for v in d.provenance.get("x_range", (-1, 1)))
    y_default = ":".join(str(v) for v in d.provenance.get("y_range", (-1, 1)))
    xr = parse_range(args.range or x_default, "--range")
    yr = parse_range(args.yrange or args.range or y_default, "--yrange")
    zr = parse_range(args.zrange or args.range or "-1:1", "--zrange")
    unit = d.provenance.get("scheme") in ("interpolate", "plane3")
    # the range a scheme suggests, moved so that its points hold the models at 0 (and 1); the default -1:1 stays
    if not args.range and "x_range" in d.provenance:  # (an even count misses the centre there: a note says so)
        xr = range_through(*xr, grid[0], unit=unit)
    if len(grid) > 1 and not (args.range or args.yrange) and "y_range" in d.provenance:
        yr = range_through(*yr, grid[1], unit=unit)
    flags = ("--range", "--yrange" if args.yrange else "--range", "--zrange" if args.zrange else "--range")
    note_models_off_grid(grid, xr, yr, zr, unit=unit, flags=flags,
                         models=d.provenance.get("models"))
    if ex is None:
        note_train_mode(model, args.model, args.mode)
    progress = TqdmProgress(name)
    common = dict(loss_fn=loss_fn, client=client, n_workers=args.workers, store=args.store, tile=parse_tile(args.tile),
                  max_samples=args.max_samples, precision=args.precision, compile=args.compile_mode or args.compile,
                  channels_last=args.channels_last, mode=args.mode, name=name, callbacks=[progress],
                  provenance=None if split is None else {"split": split}, **keys)
    from ..store import StoreMismatch

    try:
        for attempt in range(2, 100):
            try:
                if eigen:
                    from ..eigen_maps import eigen_map

                    surf = eigen_map(model, data, d, x=(*xr, grid[0]), y=(*yr, grid[1]) if len(grid) > 1 else None,
                                     tol=1e-3 if args.tol is None else args.tol, **common)
                else:
                    surf = compute_surface(model, data, d, x=(*xr, grid[0]),
                                           y=None if len(grid) == 1 else (*yr, grid[1]),
                                           z=None if len(grid) < 3 else (*zr, grid[2]), **common)
                break
            except StoreMismatch:  # a store of this command's from before the model changed: the next name
                if not getattr(args, "default_store", None) or attempt == 99:
                    raise
                args.moved_from = args.store
                args.store = common["store"] = args.default_store.replace(".zarr", f"-{attempt}.zarr")
    except LandscapeError as exc:  # the API's "x range -1..1" or "x=(-1, 1, 21)" as the flag that gave it
        if exc.__cause__ is None and len(exc.args) == 1:  # not the user's own error's words, chained; its type
            exc.args = (_range_words(str(exc), flags),)   # (ClusterLost: exit 3) and traceback stay
        raise
    finally:
        progress.close()
    sp = surf.provenance.get("seconds_per_point")
    n_diverged = surf.n_diverged
    ratio = surf.metrics.get("eig_ratio") if eigen else None
    print(f"{name}: {points_summary(surf)}, min loss {float(_nanmin(surf.loss)):.4g}"
          + (f", |λmin/λmax| (0 where λmin ≥ 0) up to {float(-_nanmin(-ratio)):.3g}" if ratio is not None else "")
          + (f", {sp * 1e3:.2f} ms/point" if sp else ""))
    outside, checkpoints = path_outside(surf)
    if outside:  # a typed range narrower than the training path (the scheme's own range holds it)
        print(f"landscape-nb: note: {outside} of the {checkpoints} checkpoints lie outside the range computed, so "
              "the figure draws that part of the training path where no loss is; drop --range (and --yrange) for "
              "the range of --directions pca, which holds them", file=sys.stderr)
    # models a typed range leaves out were named before the run (note_models_off_grid: every model at each axis's
    # 0 and 1, a plane's two at 0 too), not again here
    if str(surf.provenance.get("running_var", "")).startswith("BatchNorm") and any(
            a.min() < 0 or a.max() > 1 for a in (surf.x, surf.y) if a is not None):
        print("landscape-nb: note: beyond the models (x or y outside 0..1) BatchNorm's running_var is extrapolated "
              "and clamped at 0, where the loss can be very large: the figure's cap (--clip) keeps the rest "
              "readable, and a range of 0:1 shows only the path between them", file=sys.stderr)
    if n_diverged and not diverged_at_the_model(surf):  # compute_surface's warning said it, with the counts
        why = "a narrower --range shows the basin"
        print(f"landscape-nb: warning: the loss diverged (NaN or inf) at {n_diverged} of {surf.n_done} points; "
              f"they are gaps in the figure ({why})"
              + (f"; {surf.divergence_note}" if surf.divergence_note else ""), file=sys.stderr)
    rule = (surf.provenance.get("data") or {}).get("rule")
    if isinstance(target_key, str) and rule in ("pair", "inputs"):  # a position in tuples is used (read_data)
        print(f"landscape-nb: warning: --target-key {args.target_key} was not used: "
              + ("the data are (inputs, targets) pairs, whose targets are the second element" if rule == "pair" else
                 "the batches hold no such entry, so the model's own outputs.loss was used"), file=sys.stderr)
    try:
        write_exports(surf, args, name)
    except LandscapeError as exc:  # a figure refused (a --clip below every loss): its points are not lost
        kept = (f"every point is kept in {args.store}: rerun with that changed to draw it, nothing is computed "
                "again" if args.store else "with --no-store the points are only in the files written" if
                getattr(exc, "written", None) else "with --no-store no point was kept: drop it to keep them")
        raise LandscapeError(f"{exc} ({kept})") from None
    if getattr(args, "default_store", None):
        moved = (f"; {args.moved_from} holds another surface of this command's (its model, data, code or the "
                 "files it reads changed since)") if getattr(args, "moved_from", None) else ""
        given = "no --store was given, so" if outputs else "no --store, --html, --h5 or --vtk was given, so"
        print(f"landscape-nb: {given} the surface is kept in {args.store} (draw it with `landscape-nb plot "
              f"{args.store} --html FILE`; the same command resumes it{moved})", file=sys.stderr)
    return 0


def note_models_off_grid(grid: tuple[int, ...], *ranges: tuple[float, float], unit: bool,
                         flags: tuple[str, ...] = ("--range", "--range", "--range"),
                         models: list[str] | None = None) -> None:
    """A note on stderr for each axis where the model at 0 (and with ``unit``, a path's other model at 1) lies
    outside the range or falls between grid points: the plot then shows neither model's own loss (nor a
    barrier, which needs both ends). ``flags`` name the flag each axis's range came from. The last note gives
    what holds them on every axis (`landscape_nb.grid.grid_through_models`, counts up to ``4n+1`` and the
    per-axis limit): a ``--grid``, and for an axis whose range must move, that range with its flag
    (``--range`` for x, ``--yrange``/``--zrange`` for the others, so a new x range keeps y's and z's). ``models``
    name a path's models (the file at 1: `landscape_nb.grid.models_at`)."""
    from ..grid import (
        MAX_PER_AXIS,
        MAX_POINTS,
        grid_through_models,
        models_at,
        models_outside,
        say_models_at,
        several_at,
    )

    notes, better, fixed, named, found, same_miss = [], list(grid), {}, set(), True, None
    for k, (name, n, (a, b)) in enumerate(zip("xyz", grid, ranges)):
        outside = models_outside(a, b, unit=unit)
        missed = models_between_points(a, b, n, unit=unit)
        who = models_at(k, models, unit, len(grid))
        at = functools.partial(say_models_at, who, name)
        many = functools.partial(several_at, who)

        if outside:
            notes.append(f"{at(outside)} {'lie' if many(outside) else 'lies'} outside {flags[k]} {a:.10g}:{b:.10g}, "
                         f"so the figure does not show {'their' if many(outside) else 'its'} loss")
        if missed and not all(len(who[m]) == 1 for m in missed):  # a plane's axis: two models at its 0
            notes.append(f"{at(missed)} {'lie' if many(missed) else 'lies'} between the points of {n} on "
                         f"{a:.10g}:{b:.10g}")
            same_miss = None
        elif missed:
            at_ = " and ".join(f"{m:g}" for m in missed)
            whom = " and ".join(who[m][0] for m in missed)
            where = f"between the points of {n} on {a:.10g}:{b:.10g}"
            if same_miss and same_miss[0] == (whom, at_, where) and same_miss[2] == len(notes):
                same_miss[1].append(f"{name} = {at_}")  # one note for axes missed alike (the x note read as if
                notes[-1] = f"{whom} {'sit' if len(missed) > 1 else 'sits'} at {' and '.join(same_miss[1])}, {where}"
                notes[-1] += " on each"  # it lacked the y note's fix, trial s36)
            else:
                notes.append(f"{whom} {'sit' if len(missed) > 1 else 'sits'} at {name} = {at_}, {where}")
                same_miss = [(whom, at_, where), [f"{name} = {at_}"], len(notes)]
        named |= {w for m in (*outside, *missed) for w in who[m]}  # each model once, by name
        if outside or missed:
            fix = grid_through_models(a, b, n, unit=unit, most=min(4 * n + 1, MAX_PER_AXIS))
            found &= fix is not None
            if fix is not None:
                better[k] = fix[0]
                if (fix[1], fix[2]) != (a, b):
                    fixed[k] = (fix[1], fix[2])
    if notes and found and math.prod(better) <= MAX_POINTS:
        parts = [f"--grid {'x'.join(map(str, better))}"] if better != list(grid) else []
        for k, (a, b) in sorted(fixed.items()):
            if k and flags[k] == "--range" and fixed.get(0) == (a, b):
                continue  # --range gives it this range too
            parts.append(f"{('--range', '--yrange', '--zrange')[k]} {a:.10g}:{b:.10g}")
        if 0 in fixed:  # --range sets every axis not given its own: keep theirs
            parts += [f"{('--range', '--yrange', '--zrange')[k]} {ranges[k][0]:.10g}:{ranges[k][1]:.10g}"
                      for k in range(1, len(grid)) if k not in fixed and flags[k] == "--range"]
        verb, them = "put" if len(parts) > 1 else "puts", "them" if len(named) > 1 else "it"
        notes[-1] += f"; {' '.join(parts)} {verb} {them} on the grid"
    for note in notes:
        print(f"landscape-nb: note: {note}", file=sys.stderr)


def note_train_mode(model, name: str, mode: str) -> None:
    """Say that a model returned in train mode (as an ``nn.Module`` is built) is evaluated in eval mode, where it
    has layers that act otherwise in train mode: Dropout, and normalization with running statistics (trial s58:
    no word). The reference implementation evaluates in eval mode too; --mode bn-recompute is the other way."""
    from torch import nn

    def kind(m):
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 or (
                isinstance(m, nn.MultiheadAttention) and m.dropout > 0):
            return "Dropout"
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats and mode != "bn-recompute":
            return "BatchNorm"  # InstanceNorm's running statistics too; bn-recompute re-estimates them, as asked
        return None

    kinds = {kind(m) for m in model.modules() if m.training} - {None}
    if kinds:
        bn = ("its BatchNorm uses the running statistics (--mode bn-recompute re-estimates them on the data at "
              "every point)")
        how = " and ".join(["its Dropout is off"] * ("Dropout" in kinds) + [bn] * ("BatchNorm" in kinds))
        print(f"landscape-nb: note: {name} returned the model in train mode; every point is evaluated in eval mode "
              f"(model.eval(), as the reference implementation does), so {how}", file=sys.stderr)


def default_store(args) -> str:
    """``runs/<model>-<grid>-<8 hex digits>.zarr``: the digits hash every argument but the outputs, the
    figure's, where it runs and how much it says, so the same command resumes its own store and another one
    gets another. A store there of another surface (the model retrained since) moves the run on to
    ``...-2.zarr``, ``-3`` and so on, each resumed when it holds this surface."""
    import hashlib
    import json
    import re

    skip = {"store", "html", "h5", "vtk", "kind", "log", "clip", "client", "workers", "func", "command", "verbose",
            "no_store"}
    paths = ("dir_file", "model_file2", "model_file3", "checkpoints")  # flags added since: hashed only when
    kept = {k: v for k, v in sorted(vars(args).items())                 # given, so earlier runs keep their names
            if k not in skip and not callable(v) and not (k in (*paths, "dir_type") and v is None)}
    for k in paths:  # ./ck/a.pt and ck/a.pt: one store
        if k in kept:
            kept[k] = [os.path.normpath(p) for p in kept[k]] if isinstance(kept[k], list) else os.path.normpath(kept[k])
    digest = hashlib.sha256(json.dumps(kept, default=str).encode()).hexdigest()[:8]
    name, grid = (re.sub(r"[^A-Za-z0-9_.-]+", "_", str(v)).strip("_.") for v in (args.model, args.grid))
    return str(Path("runs") / f"{name or 'model'}-{grid}-{digest}.zarr")


def _nanmin(a):
    import numpy as np

    finite = a[np.isfinite(a)]
    return finite.min() if finite.size else float("nan")


def cmd_plot(args) -> int:
    """``plot SOURCE --html FILE``: a store, or a surface file of the reference implementation (``.h5``, its
    ``--split`` loss: ``reference.load_reference_surface``), drawn as ``--kind``."""
    from ..plot.export import export_html, mark_partial
    from ..store import load_surface

    check_paths_not_empty(args, ("SOURCE", "--html", "--h5", "--vtk"))
    if not (args.html or args.h5 or args.vtk):
        raise LandscapeError("plot writes nothing without an output; expected --html FILE (the figure), --h5 FILE "
                             "(the reference implementation's surface-file layout) or --vtk FILE (ParaView), e.g. "
                             f"landscape-nb plot {args.store} --html surface.html")
    if (args.kind or args.clip) and not args.html:
        raise LandscapeError(f"{'--kind' if args.kind else '--clip'} chooses how the HTML figure is drawn; expected "
                             "--html FILE with it (--h5 and --vtk hold the values themselves)")
    if args.html:
        check_html_name(args.html)
    source = Path(args.store)
    reference = source.suffix.lower() in H5_SUFFIXES and not source.is_dir()
    if args.split and not reference:
        raise LandscapeError(f"--split {args.split} chooses the loss of a reference .h5 surface file (train_loss or "
                             f"test_loss); {args.store} is not one (a store holds one split's surface): drop --split")
    if reference:
        from ..reference import load_reference_surface

        if not source.is_file():
            raise LandscapeError(f"no file {args.store!r}; expected a surface file of the reference implementation "
                                 "(.h5, as its plot_surface.py writes) or a landscape store directory")
        surf = load_reference_surface(source, split=args.split)
        title = f"{source.name} ({surf.provenance['split']}_loss)"
    else:
        if source.is_file():
            raise LandscapeError(f"{args.store!r} is a file but not a surface file of the reference implementation "
                                 "(.h5); expected a landscape store directory (--store) or a reference .h5 file")
        surf = load_surface(source)
        title = None  # run_title's, for the kind drawn (figure_for)
    files = argparse.Namespace(html=None, h5=args.h5, vtk=args.vtk, log=args.log, kind=None, clip=None,
                               split=args.split or _reference_split(surf, args), from_plot=True,
                               volume=f"the 3D store {args.store}")
    check_exports(files, surf.ndim)
    if args.html:
        figure = figure_for(surf, args.kind, log_scale=args.log, title=title, clip=parse_clip(args.clip))
        path = export_html(mark_partial(figure, surf), args.html)
        print(f"wrote {path}" + ("" if surf.is_complete else f" (partial: {surf.n_done}/{surf.loss.size} points)"))
        if surf.n_done == 0:  # exit 0 and an empty figure, with no word (trial s56: a reference file's test split)
            split = surf.provenance.get("split") if surf.provenance.get("source") == "reference-h5" else None
            print(f"landscape-nb: warning: {args.store} holds no computed point" + (
                f" of its {split} split (its {split}_loss is -1 everywhere, not computed yet): pick the other with "
                "--split" if split else "") + "; the figure is empty", file=sys.stderr)
    if (args.h5 or args.vtk) and not surf.is_complete:
        raise LandscapeError(
            f"{args.store} holds {surf.n_done} of {surf.loss.size} points; --h5 and --vtk write finished surfaces "
            "only (the reference's plot scripts and ParaView would draw the missing points as holes with no word "
            "of them): " + ("run the reference's plot_surface.py on it (--surf_file) to finish it"
                            if surf.provenance.get("source") == "reference-h5" else
                            "rerun the compute command that wrote it to finish it")
            + (f" (--html {args.html} was written, its points marked)" if args.html else
               ", or draw what it holds with --html FILE"))
    if args.h5 or args.vtk:
        write_exports(surf, files, "")
    return 0


def _reference_split(surf, args) -> str | None:
    """The reference's split name (train or test) a store's ``--h5`` file gives its loss: the split the run
    recorded (the CLI's ``--split``), for a surface over named splits "test" or else "train" where it has
    them (each split is written under its own name), else test. A surface over named splits with neither is
    refused, when ``--h5`` is asked for, naming its splits."""
    from ..reference import named_splits

    split = surf.provenance.get("split")
    if split in ("train", "test"):
        return split
    names = named_splits(surf)
    if names:
        found = [s for s in ("test", "train") if s in names]
        if found:
            return found[0]
        if args.h5:
            raise LandscapeError(
                f"{args.store} is a surface over the named splits {names}; the reference's .h5 layout names its "
                "losses train_loss and test_loss and its plot scripts read those, so an --h5 file needs a split "
                "named train or test: name one so in the data (data={'train': ..., 'test': ...}), or write --vtk")
    return None


def cmd_demo(args) -> int:
    from .demo import run_demo

    check_paths_not_empty(args, ("--out",))
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise LandscapeError(f"--out {args.out!r} is a file; expected a directory for the figures (it is created "
                             "if missing)")
    run_demo(Path(args.out), client=check_workers(args), n_workers=args.workers, resolution=args.resolution)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse's parser, its errors in the one line every other refusal takes (not after the usage block);
    flags only as written in full (``--ran -1:1`` was taken for ``--range`` without its value)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    #: the command given, if any (set by ``main``): argparse reports a misspelt flag from the top parser
    command: str | None = None
    #: the arguments being parsed (set by ``main``), for hints that depend on them
    argv: tuple[str, ...] = ()

    def error(self, message: str):
        prog = self.prog if " " in self.prog or not self.command else f"{self.prog} {self.command}"
        where = (f"`{prog} --help` lists its options, `landscape-nb --help` the commands and global ones"
                 if " " in prog else
                 "`landscape-nb --help` lists the commands, `landscape-nb COMMAND --help` their options")
        if "required: model" in message and "--checkpoints" in self.argv:  # nargs="+" took the model's name too
            message += "; --checkpoints takes every file name after it: put the model before --checkpoints"
        self.exit(EXIT_BAD_INPUT, f"landscape-nb: error: {message} ({where})\n")


def build_parser() -> argparse.ArgumentParser:
    from ..choices import COMPILE_MODES, EVAL_MODES, NORMS, PRECISIONS

    p = _Parser(prog="landscape-nb", description="Neural-network loss landscapes (Li et al. 2018).")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    from importlib.metadata import version  # the installed distribution's: the package root is above this layer

    p.add_argument("--version", action="version", version=f"landscape-nb {version('landscape_nb')}")
    sub = p.add_subparsers(dest="command", required=True)
    p.commands = sub.choices  # the commands' parsers by name (filled in below), for _Parser.error

    sub.add_parser("models", help="list the bundled zoo").set_defaults(func=cmd_models)

    c = sub.add_parser("compute", help="compute a 1D/2D surface (or a 3D volume) for a zoo model or module:function")
    c.add_argument("model", help="zoo name (see `landscape-nb models`) or module:function returning (model, data)")
    c.add_argument("--grid", default="51x51",
                   help="NX (a line), NXxNY (a plane) or NXxNYxNZ (a volume: --directions "
                        f"{', '.join(VOLUME_SCHEMES)}); default 51x51")
    c.add_argument("--range", help="x range START:STOP (default -1:1; the scheme's own for interpolate, "
                                   "plane3 and pca)")
    c.add_argument("--yrange", help="y range START:STOP (default: --range)")
    c.add_argument("--zrange", help="z range START:STOP of a volume (default: --range)")
    c.add_argument("--directions", choices=SCHEMES,
                   help="random (default), random-orthogonal, hessian; interpolate, plane3 and pca: a zoo model's "
                        "own minimizers and trajectory, or yours from --model-file2/--model-file3/--checkpoints")
    c.add_argument("--quantity", default="loss", choices=("loss", "hessian"),
                   help="loss (default), or hessian: Li et al.'s eigen-map, λ_max, λ_min and |λ_min/λ_max| (0 where "
                        "λ_min ≥ 0) per point "
                        "(1D or 2D grids; figure --kind eigen_map by default: the ratio map of a plane, λ_max "
                        "and λ_min along a line)")
    c.add_argument("--tol", type=float, help="the eigen-map's Lanczos tolerance (default 1e-3; --quantity hessian)")
    c.add_argument("--norm", choices=NORMS, help="random directions' normalization (default filter: Li et al.'s "
                                                 "filter normalization)")
    c.add_argument("--ignore", choices=("biasbn", "none"),
                   help="biasbn (default): biases and BatchNorm weights get no random or PCA direction")
    c.add_argument("--seed", type=int, help="random and hessian directions' seed (default 0)")
    c.add_argument("--dir-file", help="directions from a file, used as saved: a direction file of the reference "
                                      "implementation (.h5, as its plot_surface.py --dir_file takes), one written by "
                                      "Directions.save (.npz) or the directions kept in a landscape store (.zarr)")
    c.add_argument("--dir-type", choices=("weights", "states"),
                   help="what a reference --dir-file lists: one tensor per parameter (weights) or per state_dict "
                        "entry (states, BatchNorm statistics too); default: inferred from the file")
    c.add_argument("--model-file2", help="a checkpoint (state dict .pt) of the same model: the line from the model "
                                         "(x=0) to it (x=1), --directions interpolate, as the reference's "
                                         "--model_file2")
    c.add_argument("--model-file3", help="with --model-file2: the plane through the model (0,0), --model-file2 (1,0) "
                                         "and this checkpoint (0,1), --directions plane3")
    c.add_argument("--checkpoints", nargs="+", metavar="FILE",
                   help="the training trajectory's state dicts (.pt), in training order (put them after the model "
                        "argument): --directions pca, the plane that best fits them (Li et al. 2018, §7)")
    c.add_argument("--split", choices=("train", "test"),
                   help="the data split (default test): a zoo model's, or passed as split= to a module:function "
                        "that takes it")
    c.add_argument("--max-samples", type=int, help="evaluate a fixed-seed subset of this many samples (all when "
                                                   "the data hold fewer)")
    c.add_argument("--target-key", help="where the targets are in your data's batches: a dict key (default "
                                        "labels) or a position in tuples, pairs included (default -1, the last; "
                                        "0 for (targets, inputs))")
    c.add_argument("--mode", default="eval", choices=EVAL_MODES,
                   help="eval: BatchNorm's running statistics (default); bn-recompute: re-estimated on the data "
                        "at every point, only the BatchNorm layers in train mode (Dropout stays off)")
    c.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="fp32 (default, fp32 throughout), tf32 or bf16 (autocast; faster on a GPU, values to its "
                        "rounding)")
    c.add_argument("--compile", action="store_true",
                   help="torch.compile the model: compiling takes seconds to minutes, which a large grid on a GPU "
                        "can win back")
    c.add_argument("--compile-mode", choices=COMPILE_MODES, help="torch.compile in this mode (implies --compile)")
    c.add_argument("--channels-last", action="store_true", help="image inputs in channels_last memory format")
    c.add_argument("--client", default="none", help="none (in-process), local, cuda, or a scheduler address")
    c.add_argument("--workers", type=int, help="workers for --client local/cuda")
    c.add_argument("--tile", help="points per task: N (N points a line, NxN a plane, NxNxN a volume), ROWSxCOLS, "
                                  "or DEPTHxROWSxCOLS for a volume")
    c.add_argument("--store", help="directory to save (and resume) the surface (default: "
                                   "runs/MODEL-GRID-HASH.zarr, which the same command resumes)")
    c.add_argument("--no-store", action="store_true",
                   help="keep the points only in --html/--h5/--vtk: no store under runs/ (a figure refused after "
                        "the run, or a Ctrl-C, then loses them)")
    c.add_argument("--html", help="write a standalone HTML figure here")
    c.add_argument("--h5", help="write the surface here in the reference implementation's HDF5 layout "
                                "(tomgoldstein/loss-landscape; the loss as <split>_loss, e.g. test_loss)")
    c.add_argument("--vtk", help="write the surface here as a legacy VTK file for ParaView (with --log: log10 "
                                 "height)")
    c.add_argument("--kind", choices=KINDS, help="figure kind (default: line for 1D, surface for 2D (eigen_map for "
                                                 "--quantity hessian, contour with the training path for a PCA "
                                                 "plane), volume for 3D; slices: contours at three z values)")
    c.add_argument("--log", action="store_true", help="log-scale loss (of the --html figure and the --vtk height)")
    c.add_argument("--clip", metavar="auto|none|LOSS", help=CLIP_HELP)
    c.set_defaults(func=cmd_compute)

    pl = sub.add_parser("plot", help="plot a saved surface store, or a reference .h5 surface file, to HTML")
    pl.add_argument("store", metavar="SOURCE", help="a store directory (--store), or a surface file of the reference "
                                                    "implementation (.h5, as its plot_surface.py writes)")
    pl.add_argument("--kind", choices=KINDS, help="figure kind (default: line for 1D, surface for 2D, eigen_map for "
                                                  "an eigen-map, contour with the training path for a PCA plane, "
                                                  "volume for 3D; slices: contours at three z values)")
    pl.add_argument("--html", help="write the standalone HTML figure here")
    pl.add_argument("--h5", help="write a finished surface in the reference implementation's .h5 layout here, as "
                                 "compute --h5 does (its loss under <split>_loss: the store's split, else test)")
    pl.add_argument("--vtk", help="write a finished surface as a legacy VTK file for ParaView here, as compute --vtk "
                                  "does (with --log: height log10(loss))")
    pl.add_argument("--log", action="store_true", help="log-scale loss")
    pl.add_argument("--clip", metavar="auto|none|LOSS", help=CLIP_HELP)
    pl.add_argument("--split", choices=("train", "test"),
                    help="a reference .h5 file's loss to draw: train_loss or test_loss (default: train_loss, else "
                         "test_loss, the one it holds)")
    pl.set_defaults(func=cmd_plot)

    d = sub.add_parser("demo", help="compute surfaces for bundled models and write HTML figures")
    d.add_argument("--out", default="landscape_demo", help="output directory (default ./landscape_demo)")
    d.add_argument("--client", default="local", help="local (default), none, cuda or a scheduler address")
    d.add_argument("--workers", type=int)
    d.add_argument("--resolution", type=int, default=31, help="points per axis of the 2D surfaces (default 31)")
    d.set_defaults(func=cmd_demo)
    return p


EXIT_BAD_INPUT, EXIT_LOST = 2, 3
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM, as shells report them


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so the same clean-up runs (clusters close)."""


class _Interrupts:
    """SIGINT handler: the first Ctrl-C raises KeyboardInterrupt (clusters close, finished tiles
    stay in the store, one line says so). A second one while that clean-up runs (a second or
    two) is not let to break it, which left a local cluster's close waiting ~10 s and the
    process exiting by signal: it says what is happening; a third ends the process at once
    (exit 130; worker processes end with it, distributed watches their parent, and a store
    keeps every flushed tile through a hard exit)."""

    def __init__(self, quiet: bool = True):
        self.count = 0
        self.quiet = quiet
        self.levels: dict[str, int] = {}  # loggers quieted by the first Ctrl-C, with their levels before

    def __call__(self, signum, frame):
        self.count += 1
        if self.count == 1:
            if self.quiet:
                self.quiet_cluster_logs()
            raise KeyboardInterrupt
        if self.count == 2:  # on a line of its own, below a progress bar
            sys.stderr.write("\nlandscape-nb: stopping (finished tiles are safe; closing any workers) "
                             "(Ctrl-C again to exit at once)\n")
            sys.stderr.flush()
            return
        sys.stderr.write("\nlandscape-nb: interrupted again; exiting now\n")
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)

    def terminated(self, signum, frame):
        """SIGTERM handler: raise `_Terminated`, Dask's logs quieted as for Ctrl-C."""
        if self.quiet:
            self.quiet_cluster_logs()
        raise _Terminated

    def quiet_cluster_logs(self) -> None:
        """Silence Dask's, tornado's and asyncio's loggers, each child logger included: a local cluster stopped
        while its first tasks run logs every comm its scheduler finds closed at CRITICAL (a trial's early Ctrl-C
        printed 40 to 151 tracebacks around the one line that is ours)."""
        names = [n for n in list(logging.root.manager.loggerDict)
                 if n.split(".", 1)[0] in ("distributed", "asyncio", "tornado")]
        for name in {"distributed", "asyncio", "tornado", *names}:
            self.levels.setdefault(name, logging.getLogger(name).level)
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)

    def restore(self) -> None:
        """Put back the loggers the first Ctrl-C quieted."""
        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)


def _partial_figure(args) -> str | None:
    """After an interrupted ``compute --html FILE``: the store's finished points drawn there (as ``plot STORE
    --html FILE`` draws them, the missing ones marked), and the words saying so; None where there is nothing to
    draw or it cannot be drawn. An interrupted run wrote no figure, only the command that draws one (s57)."""
    if getattr(args, "func", None) is not cmd_compute or not getattr(args, "html", None):
        return None
    try:
        from ..plot.export import export_html, mark_partial
        from ..store import load_surface

        surf = load_surface(args.store)
        if not 0 < surf.n_done < surf.loss.size:
            return None
        figure = figure_for(surf, args.kind, log_scale=args.log, clip=parse_clip(args.clip))
        path = export_html(mark_partial(figure, surf), args.html)
    except LandscapeError as exc:  # a --clip below every loss so far: said, with the command that draws them
        return (f"`landscape-nb plot {args.store} --html FILE` draws them; --html {args.html} was not written: "
                f"{_cli_words(_one_line(exc))}")
    except (Exception, KeyboardInterrupt):  # noqa: BLE001 - a courtesy: the interrupt's own line must follow
        return None
    return f"{path} draws them, marked as partial"


def _kept_in(store, where: str, drawn: str | None = None) -> str:
    """What an interrupted run's store keeps: its finished tiles (N of M points), or every point (then only
    the outputs are missing); ``drawn``: the words of `_partial_figure`, where it drew them."""
    try:
        from ..store import load_surface

        surf = load_surface(store)
        n_done, size = surf.n_done, surf.loss.size
    except Exception:  # noqa: BLE001 - the count is a courtesy; the line must still be printed
        return f"finished tiles are kept in the store{where} (rerun to resume)"
    if n_done == size:
        return (f"every point is in the store{where} ({n_done} of {size} points): rerun to write the outputs "
                "from it (nothing is computed again)")
    if n_done == 0:  # made, but stopped before its first tile ("finished tiles are kept (0 of ...)", trial s36)
        return f"no tile had finished, so the store{where} holds no point yet (rerun to compute them)"
    return (f"finished tiles are kept in the store{where} ({n_done} of {size} points) (rerun to resume; "
            + (f"{drawn})" if drawn else f"`landscape-nb plot {store} --html FILE` draws them now)"))


def _show_warning(message, category, filename, lineno, file=None, line=None, *, _default=warnings.showwarning):
    """The package's warnings as the CLI's other notes, ``landscape-nb: warning: ...`` (not a Python file, line
    and source line); other libraries' as Python shows them."""
    from ..grid import ModelOffGrid

    if issubclass(category, ModelOffGrid):  # said before the run, with the flags that hold the models
        return
    text = str(message)
    if not text.startswith("landscape_nb"):
        return _default(message, category, filename, lineno, file, line)
    text = _cli_words(re.sub(r"^landscape_nb(\.\w+)*: ", "", text))
    print(f"landscape-nb: warning: {text}", file=sys.stderr if file is None else file)


def _exit_at_once_with(code: int) -> None:
    """After the command's work is done, a Ctrl-C or SIGTERM while the process exits (closing workers,
    flushing) ends it at once with the command's own exit code: its outputs are written, and 130 would
    tell a script to throw them away."""
    def handler(signum, frame):
        sys.stderr.write(f"\nlandscape-nb: signalled after the command had finished; exiting with its code {code}\n")
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)
    # Python's shutdown puts back the default action of a signal with a handler of its own (an exit by the
    # signal: 130, 143) before it tears down its modules (~0.5 s with torch); an ignored one stays ignored
    import atexit

    atexit.register(lambda: [signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)])


#: the API's words in messages the CLI passes on, and the flags that say the same (a key the message names is
#: kept: "target_key='y'" read "--target-key KEY'y'", trial s58)
_API_TO_FLAGS = ((r"name the targets with target_key='([^'\s]+)'", r"name the targets with --target-key \1"),
                 (r"name the targets with target_key=(?!')", "name the targets with --target-key KEY"),
                 # "the dict has no targets entry (target_key='labels')": the flag, the default named (re-trial s58)
                 (r"\(target_key='([^'\s]+)'\)", r"(--target-key \1)"),
                 # the CLI has no batch size: the Python call that sets one (trial s58)
                 (r"\(batch_size=(\w+)((?: \([^)]*\))?) for that, or ", r"(from Python, batch_size=\1\2 for that, or "),
                 # a --dir-file of another model's (trial s59): the CLI's way to make them for this one
                 (r"make them for this model, random_directions\(model, \.\.\.\), with the same seed",
                  "make them for this model: drop --dir-file (--directions random, with the same --seed)"),
                 (r"compute hessian_directions\(model, data, \.\.\.\) for this one",
                  "drop --dir-file for --directions hessian on this one"),
                 # checkpoint files in a glob's order (trial s59): a shell user keeps an order by the files' names
                 (r"to keep yours, pass the loaded state dicts, \[torch\.load\(f\) for f in files\]",
                  "to keep yours, name the files so that their numbers run in training order"))


def _cli_words(text: str, checkpoints: list[str] | None = None) -> str:
    """``text`` with the API arguments it names replaced by the CLI's flags where the message tells what to pass
    (``clip=0.5`` as ``--clip 0.5``, ``clip=False`` as ``--clip none``, ``precision='bf16'`` as ``--precision
    bf16``, ``n=2 principal directions`` as a 2D ``--grid``), and the API's 0-based "checkpoint k" as the
    ``checkpoints`` file it is (``--checkpoints e10.pt``)."""
    import re

    for api, flag in _API_TO_FLAGS:
        text = re.sub(api, flag, text)
    if "accuracy skipped: " in text:  # a classifier's, warned by compute_surface (trial s40)
        text += (" (the CLI computes the automatic accuracy only: such a metric is passed from Python, "
                 "lnb.compute_surface(..., metrics=...))")
    # "chained as __cause__" tells a Python caller where the traceback is; a shell's is behind -v (trial s34)
    text = re.sub(r"the original exception is chained as `?`?__cause__`?`?",
                  "rerun as landscape-nb -v COMMAND ... for its traceback", text)
    if checkpoints:
        name = lambda m: (f"--checkpoints {checkpoints[int(m[1])]}" if int(m[1]) < len(checkpoints) else m[0])
        text = re.sub(r"\bcheckpoint (\d+)(?: \('[^']*'\))?", name, text)
    text = re.sub(r"(--(?:checkpoints|model-file[23]) (\S+)): no file '\2'", r"\1: no such file", text)
    text = re.sub(r"\bn=(\d) principal directions",
                  lambda m: f"{m[1]} principal directions (a {m[1]}D --grid)", text)
    text = text.replace("or ask for fewer directions (n=1)", "or draw a line of one direction (a 1D --grid, e.g. "
                        "--grid 21)")
    text = re.sub(r"(?<![(\w])(?<!, )precision='(\w+)'", r"--precision \1", text)
    # store='afile', client='cuda' (trial s53): the flags that gave them, not inside code a message shows
    text = re.sub(r"(?<![(\w])(?<!, )(store|client)='([^'\s]*)'", r"--\1 \2", text)
    text = re.sub(r"(--[\w-]+ [^\s()]+) \(CLI: \1\)", r"\1", text)  # "--client local (CLI: --client local)" (s59)
    text = text.replace("another architecture than `final`", "another architecture than the model")
    text = text.replace("expected None (automatic), False (no cap) or a finite number in loss units (positive when "
                        "log=True)", "expected auto, none (no cap) or a loss value (positive with --log)")
    text = re.sub(r"\(or None: automatic, False: (no cap|every value)\)", r"(or --clip auto, or --clip none for \1)",
                  text)
    # not inside code a message shows, e.g. "def make(split='test')" or "f(x, clip=2)"
    text = re.sub(r"(?<![(\w])(?<!, )split='(\w+)'(?: or '(\w+)')?",
                  lambda m: f"--split {m[1]}" + (f" or --split {m[2]}" if m[2] else ""), text)
    return re.sub(r"(?<![(\w])(?<!, )clip=([^\s,;)]+)",
                  lambda m: "--clip " + {"False": "none", "None": "auto"}.get(m[1], m[1]), text)


def _range_words(text: str, flags: tuple[str, ...]) -> str:
    """``text`` with the API's words for an axis's range ("the y range -1..1", "y=(-1, 1, 21)", "a smaller y
    range, e.g. -1..1") in the flag that set it (``flags[k]`` for x, y, z) and its START:STOP form."""
    import re

    flag = lambda m: flags["xyz".index(m[1])]
    text = re.sub(r"a smaller ([xyz]) range, e\.g\. (\S+?)\.\.(\S+?)\b", lambda m: f"a smaller {flag(m)}, e.g. "
                  f"{flag(m)} {m[2]}:{m[3]}", text)
    text = re.sub(r"the ([xyz]) range (\S+?)\.\.(\S+)", lambda m: f"{flag(m)} {m[2]}:{m[3]}", text)
    return re.sub(r"\b([xyz])=\((\S+), (\S+), \d+\)", lambda m: f"{flag(m)} {m[2]}:{m[3]}", text)


def _cannot_load(name: str, mod_name: str, exc: BaseException) -> LandscapeError:
    """The error for a ``module:function`` that cannot be found or imported."""
    path = ("; name the module as Python imports it, not by its path: e.g. mymodels:build for "
            "./mymodels.py, run from its folder or with its folder on PYTHONPATH"
            if mod_name.startswith(".") or "/" in mod_name or mod_name.endswith(".py") else "")
    return LandscapeError(f"cannot load {name!r} ({exc}); expected module:function, a function returning "
                          f"(model, data) or (model, data, loss_fn), importable from the current directory{path}")


def _raised_at(exc: BaseException) -> str:
    """Where the user's code raised ``exc`` (`errors.user_frame`) and how to see its traceback: an error of the
    user's own make() said what, not where (trial s58)."""
    from ..errors import user_frame

    at = user_frame(exc)
    return f"{at[:-1]}; rerun as landscape-nb -v COMMAND ... for its traceback)" if at else ""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _shortened(exc: BaseException) -> str:
    """``exc`` on one line, cut at a word; the whole message is in the chained exception (-v)."""
    return one_line(exc, whole="rerun as landscape-nb -v COMMAND ... for all of it")


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--range -1:1`` → ``--range=-1:1`` (argparse takes ``-1:1`` for an option otherwise)."""
    out: list[str] = []
    for tok in argv:
        if out and out[-1] in ("--range", "--yrange", "--zrange") and tok.startswith("-"):
            out[-1] = f"{out[-1]}={tok}"
        else:
            out.append(tok)
    return out


def main(argv: list[str] | None = None) -> int:
    argv_given = argv is not None
    argv = _join_negative_values(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    parser.command = next((a for a in argv if a in parser.commands), None)
    _Parser.argv = tuple(argv)  # the subcommands' parsers report errors too
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:  # cluster start/stop chatter; read by dask's config when distributed is imported
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    on_main_thread = threading.current_thread() is threading.main_thread()
    shown_before, warnings.showwarning = warnings.showwarning, _show_warning
    previous = {}
    if on_main_thread:
        interrupts = _Interrupts(quiet=not args.verbose)
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, interrupts.terminated),
                    signal.SIGINT: signal.signal(signal.SIGINT, interrupts)}
    t0 = time.perf_counter()
    try:  # from here on, Ctrl-C (even while torch imports) ends with one line, not a traceback
        from ..process import keep_heap_top

        keep_heap_top()  # this process is ours: keep freed activations mapped (see its docstring)
        cwd = str(Path.cwd())
        if sys.path[:1] != [cwd]:  # `compute module:function` imports the user's module from here
            sys.path.insert(0, cwd)
        code = args.func(args)
        if on_main_thread and not argv_given:  # the console script, its work done
            _exit_at_once_with(code)
    except LandscapeError as exc:
        from ..runners import ClusterLost

        cause = exc.__cause__
        if args.verbose and cause is not None:  # where in the user's code (an error in a helper of forward)
            import traceback

            traceback.print_exception(type(cause), cause, cause.__traceback__, file=sys.stderr)
        print(f"landscape-nb: error: {_cli_words(_one_line(exc), getattr(args, 'checkpoints', None))}",
              file=sys.stderr)
        return EXIT_LOST if isinstance(exc, ClusterLost) else EXIT_BAD_INPUT
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if isinstance(exc, _Terminated) else "interrupted"
        if getattr(args, "done", False):  # its outputs were written
            print(f"landscape-nb: {how} after the outputs were written; they are complete", file=sys.stderr)
            return 0
        store = getattr(args, "store", None)
        if store and not Path(store).exists():
            kept = "no tile had finished, so no store was written"
        elif store:  # the store named if not given; with --html, its points drawn there
            kept = _kept_in(store, f" {store}" if getattr(args, "default_store", None) else "", _partial_figure(args))
        elif args.func is cmd_demo:
            kept = "finished tiles are kept in the store (rerun to resume)"
        else:
            kept = ("nothing was kept (--no-store: drop it, or pass --store DIR, to keep finished tiles and resume)"
                    if getattr(args, "no_store", False) else
                    "nothing was kept (pass --store DIR to keep finished tiles and resume)")
        print(f"landscape-nb: {how}; {kept}", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(exc, _Terminated) else EXIT_INTERRUPTED
    finally:
        if argv_given:
            warnings.showwarning = shown_before
        # the console script keeps them to its end: a Ctrl-C during the exit then ends it at once
        # too; a caller of main([...]) gets its own back
        for signum, handler in previous.items() if argv_given else ():
            signal.signal(signum, handler)
        if previous and argv_given:
            interrupts.restore()
    logger.info("done in %.1f s", time.perf_counter() - t0)
    return code
