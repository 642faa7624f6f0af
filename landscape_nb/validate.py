"""The one validation layer of ``compute_surface`` (and of every entry point built on it).

Everything here runs before a runner is made and before the model sees a single input, so bad
input ends in a one-line ``LandscapeError`` that says what was given, never in a raw exception
from deep inside torch or Dask, and never in a silent all-NaN surface: a non-finite weight,
direction or range is refused up front. Nothing here changes the model.
"""
from __future__ import annotations

import difflib
import math
import os
from typing import Mapping

import numpy as np
import torch
from torch import nn

from .choices import COMPILE_MODES, EVAL_MODES
from .directions import Directions
from .errors import (
    LandscapeError,
    check_choice,
    closest_name,
    positive_int,
    seed_int,
    warn_user,
)
from .errors import is_int as _is_int
from .errors import short_repr as _short
from .evaluate import PRECISIONS, EvalSettings
from .grid import Axis, Grid
from .metrics import BUILTIN_METRICS
from .params import check_finite, check_materialized
from .surface import Surface

MODES = (*EVAL_MODES, "bn")  # "bn": the short alias of "bn-recompute"


def check_arguments(*, model, data, loss_fn, metrics, store, tile, callbacks, cancel, device, name,
                    n_workers, bn_data, quantity, quantity_options, quantities, resume=None) -> None:
    """Types and values of ``compute_surface``'s plain arguments (no forward pass, no Dask).

    Raises
    ------
    LandscapeError
        One line naming the argument, the value given and what is expected.
    """
    check_model(model)
    check_data("data", data)
    if bn_data is not None:
        check_data("bn_data", bn_data)
    if loss_fn is not None and not callable(loss_fn):
        raise LandscapeError(f"loss_fn={_short(loss_fn)}; expected a callable (outputs, targets) -> scalar mean "
                             "loss, or None for cross-entropy")
    check_metrics(metrics)
    check_store(store)
    if resume is not None:
        if not isinstance(resume, Surface):
            raise LandscapeError(f"resume={_short(resume)}; expected a partial Surface of this same call (as a "
                                 "cancelled run returns it, or ClusterLost.surface) or None")
        if store is not None:
            raise LandscapeError(f"resume= and store={_short(store)} together; a store resumes by itself: give one "
                                 "of them")
    check_tile(tile)
    if isinstance(callbacks, (str, bytes)) or not hasattr(callbacks, "__iter__"):
        raise LandscapeError(f"callbacks={_short(callbacks)}; expected an iterable of callables (TileDone) -> None, "
                             "e.g. callbacks=[print]")
    if cancel is not None and not callable(getattr(cancel, "is_set", None)):
        raise LandscapeError(f"cancel={_short(cancel)}; expected a threading.Event (set it to stop early) or None")
    check_device(device)
    if name is not None and not isinstance(name, str):
        raise LandscapeError(f"name={_short(name)}; expected a str (the surface's label in figures) or None")
    positive_int("n_workers", n_workers, none="one worker per core, up to 8")
    if not isinstance(quantity, str) or quantity not in quantities:
        close = difflib.get_close_matches(str(quantity), list(quantities), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise LandscapeError(f"quantity={_short(quantity)}; expected one of {list(quantities)}{hint}")
    if quantity_options is not None and not (isinstance(quantity_options, Mapping)
                                             and all(isinstance(k, str) for k in quantity_options)):
        raise LandscapeError(f"quantity_options={_short(quantity_options)}; expected a dict of keyword "
                             "arguments (str keys) or None")
    if quantity_options:  # a typo reached the evaluator's constructor and was blamed on the model; options for
        import inspect  # the loss were ignored (trial s36)

        make = quantities[quantity]
        takes = [] if make is None else [n for n in inspect.signature(make).parameters if n != "base"]
        unknown = [k for k in quantity_options if k not in takes]
        if unknown:
            close = closest_name(unknown[0], takes)
            raise LandscapeError(
                f"quantity_options={_short(quantity_options)}: {', '.join(map(repr, unknown))} "
                f"{'is' if len(unknown) == 1 else 'are'} not an option of quantity={quantity!r}, which takes "
                + (f"{', '.join(takes)}" if takes else "none (drop quantity_options)")
                + (f" (did you mean {close!r}?)" if close else ""))


def check_callbacks(callbacks) -> list:
    """The callbacks as a list, each callable."""
    out = list(callbacks)
    for k, cb in enumerate(out):
        if not callable(cb):
            raise LandscapeError(f"callbacks[{k}]={_short(cb)}; expected a callable (TileDone) -> None")
    return out


def check_model(model) -> None:
    """A module whose tensors hold values (not on the meta device)."""
    if not isinstance(model, nn.Module):
        raise LandscapeError(f"model={_short(model)} of type {type(model).__name__}; expected a torch.nn.Module")
    check_materialized(model)


def check_data(what: str, data) -> None:
    """A form ``data.as_batches`` accepts: (inputs, targets) or longer tuples of tensors, tuples or dicts
    (pytrees), a dict batch, named splits ``{"train": ..., "test": ...}``, a Dataset, a DataLoader or a
    zero-argument factory. The contents are checked where the data are read (``landscape_nb.data``)."""
    from torch.utils.data import DataLoader, Dataset

    from .splits import is_splits

    if isinstance(data, (Dataset, DataLoader)):
        return
    if callable(data) and not isinstance(data, (nn.Module, type)):
        return
    plain = (str, bytes, tuple, list, Mapping, torch.Tensor, np.ndarray)
    if hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, plain):
        return  # any indexable with a length reads as a map-style dataset (e.g. a Hugging Face Dataset)
    if is_splits(data):
        for name, split in data.items():
            check_data(f"{what} split {name!r}", split)
        return
    leaf = (torch.Tensor, np.ndarray, list, tuple, Mapping)
    if isinstance(data, Mapping) or (isinstance(data, (tuple, list)) and len(data) >= 1):
        items = data.items() if isinstance(data, Mapping) else enumerate(data)
        for part, item in items:
            if not isinstance(item, leaf) or isinstance(item, (str, bytes)):
                raise LandscapeError(f"{what}: element {part!r} of type {type(item).__name__} ({_short(item, 40)}); "
                                     "expected tensors or arrays with the samples along the first axis (or "
                                     "tuples/dicts of them)")
        return
    raise LandscapeError(
        f"{what}={_short(data, 60)} of type {type(data).__name__}; expected (inputs, targets) tensors, "
        "a dict batch, named splits, a Dataset, a DataLoader or a zero-argument callable returning one of those"
    )


def check_metrics(metrics) -> None:
    """``"auto"``, None, a metric name, a list of names/callables or a dict name -> name/callable."""
    if metrics is None or (isinstance(metrics, str) and metrics == "auto"):
        return
    if isinstance(metrics, str):
        items = [(metrics, metrics)]
    elif isinstance(metrics, Mapping):
        items = list(metrics.items())
    elif isinstance(metrics, (list, tuple)):
        items = [(m if isinstance(m, str) else getattr(m, "__name__", repr(m)), m) for m in metrics]
    else:
        raise LandscapeError(f"metrics={_short(metrics)} of type {type(metrics).__name__}; expected 'auto', None, "
                             "a metric name, a list of names or a dict name -> callable(outputs, targets)")
    for key, fn in items:
        if not isinstance(key, str):
            raise LandscapeError(f"metrics has a name {_short(key)}; expected str names")
        if isinstance(fn, str):
            check_choice("metric", fn, tuple(BUILTIN_METRICS),
                         fix="or pass a dict name -> callable(outputs, targets) returning a scalar mean")
        elif not callable(fn):
            raise LandscapeError(f"metric {key!r} is {_short(fn)}; expected a callable (outputs, targets) -> scalar "
                                 f"or one of {sorted(BUILTIN_METRICS)}")


def check_store(store) -> None:
    """None, or a path that is a directory or does not exist yet."""
    if store is None:
        return
    if not isinstance(store, (str, os.PathLike)):
        raise LandscapeError(f"store={_short(store)} of type {type(store).__name__}; expected a directory path "
                             "(str or pathlib.Path) or None")
    path = os.fspath(store)
    if path == "":
        raise LandscapeError("store=''; expected a directory path or None")
    if os.path.exists(path) and not os.path.isdir(path):
        raise LandscapeError(f"store={path!r} is a regular file, not a directory; expected a new path or a "
                             "store directory made by compute_surface: choose another path")
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent) if os.path.dirname(parent) != parent else ""
    if parent and not os.path.isdir(parent):
        raise LandscapeError(f"store={path!r} lies under {parent!r}, which is a file; expected a directory path")


def check_tile(tile) -> None:
    """None, a positive int, (rows, cols) or, for a volume, (depth, rows, cols) of positive ints
    (whether the form fits the grid is ``Grid.check_tile``'s to say)."""
    if tile is None:
        return
    parts = [tile] if not isinstance(tile, (tuple, list)) else list(tile)
    if len(parts) not in (1, 2, 3) or not all(_is_int(p) and p >= 1 for p in parts):
        raise LandscapeError(f"tile={_short(tile)}; expected a positive int, (rows, cols) or (depth, rows, cols) of "
                             "positive ints, e.g. tile=(8, 8), or None for the default")


def check_device(device) -> None:
    """None, or a torch device that exists here and can hold values."""
    if device is None:
        return
    if not isinstance(device, (str, torch.device)):
        raise LandscapeError(f"device={_short(device)} of type {type(device).__name__}; expected a str such as "
                             "'cpu' or 'cuda:0', a torch.device, or None (the model's device)")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise LandscapeError(f"device={device!r} is not a torch device; expected e.g. 'cpu', 'cuda' or 'cuda:1', "
                             "or None (the model's device)") from None
    if dev.type == "meta":
        raise LandscapeError(f"device={device!r} holds no values; expected 'cpu', 'cuda', ... or None")
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0 or (dev.index is not None and dev.index >= n):
            raise LandscapeError(f"device={device!r}, but torch sees {n} CUDA GPU(s) here; use device='cpu' or "
                                 "None (the model's device)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise LandscapeError(f"device={device!r}, but MPS is not available here; use device='cpu' or None")


def check_settings(settings: EvalSettings) -> EvalSettings:
    """Every field of the merged settings (keywords over ``settings=``), with did-you-means."""
    s = settings
    positive_int("batch_size", s.batch_size, none="tuned on the first points")
    positive_int("max_samples", s.max_samples, none="all samples")
    positive_int("points_per_pass", s.points_per_pass, none="chosen by measurement")
    seed_int(s.subset_seed, "the max_samples subset", name="subset_seed")
    if not isinstance(s.precision, str):
        raise LandscapeError(f"precision={_short(s.precision)}; expected one of {list(PRECISIONS)}")
    check_choice("precision", s.precision, PRECISIONS)
    if not isinstance(s.mode, str):
        raise LandscapeError(f"mode={_short(s.mode)}; expected one of {list(MODES)}")
    check_choice("mode", s.mode, MODES)
    s.check_one_point_modes()
    if not (isinstance(s.compile, (bool, np.bool_)) or (isinstance(s.compile, str) and s.compile in COMPILE_MODES)):
        raise LandscapeError(f"compile={_short(s.compile)}; expected True, False or a torch.compile mode, one of "
                             f"{list(COMPILE_MODES)}")
    for flag in ("channels_last", "fold_bn"):
        if not isinstance(getattr(s, flag), (bool, np.bool_)):
            raise LandscapeError(f"{flag}={_short(getattr(s, flag))}; expected True or False")
    return s


def check_precision(model: nn.Module, settings: EvalSettings, quantity: str = "loss") -> None:
    """``precision="bf16"`` and ``"tf32"``: refused for a model whose weights are not float32 (autocast and
    TF32 only change float32 operations: a float64 model ran in float64 under a bf16 or tf32 label); bf16 is
    warned about otherwise: each point is then about 1e-2 relative, not the 1e-5 of fp32 (2.5e-3 to 7.8e-3
    against a float64 loop on five small CPU models, 2026-12-02; 1.75e-2 at a trial's minimizer, s34)."""
    if settings.precision not in ("bf16", "tf32"):
        return
    from .params import model_dtype

    dtype = model_dtype(model)
    if dtype != torch.float32:
        what = "bf16 autocast" if settings.precision == "bf16" else "TF32"
        raise LandscapeError(f"precision={settings.precision!r} for a {str(dtype).removeprefix('torch.')} model; "
                             f"{what} only lowers float32 operations, so it would run in the model's own precision "
                             f"under a {settings.precision} label; expected a float32 model (model.float()), or "
                             "precision='fp32' (which runs a model in its own dtype)")
    if settings.precision != "bf16":
        return
    hessian = ("; an eigen-map's Hessian-vector products are not autocast: λ_max, λ_min and their ratio are "
               "float32's (a trial's were bit-identical to fp32's)" if quantity == "hessian" else "")
    warn_user("landscape_nb: precision='bf16' computes each point's loss to about 1e-2 relative (2.5e-3 to 1.8e-2 "
              "against a float64 loop on small models), not the 1e-5 of fp32: fine for a surface's shape, not "
              f"for differences smaller than that{hessian}")


def check_numbers(model: nn.Module, directions: Directions, grid: Grid) -> None:
    """Refuse a non-finite weight, direction or coordinate, and perturbations beyond the weights' dtype.

    Any of them would give a surface of NaN/inf everywhere that looks computed; this is caught here,
    before the first point.
    """
    axes = [a for a in (grid.x, grid.y, getattr(grid, "z", None)) if isinstance(a, Axis)]
    names = ["x", "y", "z"]
    coeff_max = []
    for name, axis in zip(names, axes):
        with np.errstate(over="ignore", invalid="ignore"):
            values = axis.values()
        if not (math.isfinite(axis.stop - axis.start) and np.isfinite(values).all()):
            raise LandscapeError(f"{name}=({axis.start:g}, {axis.stop:g}, {axis.num}): the coordinates overflow "
                                 "(stop - start is not a finite float); expected a range of moderate size, e.g. "
                                 f"{name}=(-1, 1, {axis.num})")
        coeff_max.append(float(np.abs(values).max()))
    tensors = directions.layout.tensors(model)
    check_finite(directions.layout, tensors, ", so every point of the surface would be too")
    w_max, dtype = 0.0, torch.float32
    for t in tensors:
        if t.is_floating_point() and t.numel():
            w_max, dtype = max(w_max, float(t.detach().abs().max())), t.dtype
    for bname, buf in model.named_buffers():  # BatchNorm running statistics, whether or not directions move them
        if buf.is_floating_point() and buf.numel() and not bool(torch.isfinite(buf).all()):
            raise LandscapeError(f"the model's buffer {bname!r} holds {int((~torch.isfinite(buf)).sum())} non-finite "
                                 "value(s) (NaN or inf); expected finite running statistics: every point of the "
                                 "surface would be NaN (reload the checkpoint, or re-estimate them with "
                                 "mode='bn-recompute')")
    vectors = directions.vectors  # finite: as_directions checked them
    d_max = vectors.abs().amax(dim=1).double().tolist() if vectors.numel() else [0.0] * len(coeff_max)
    reach = w_max + sum(c * d for c, d in zip(coeff_max, d_max))
    limit = float(torch.finfo(dtype).max)
    if not reach < limit / 16:  # headroom: forward passes sum many such products
        # blame the axis that moves the weights furthest (a wide z must not read as a fault of x and y)
        i = max(range(len(axes)), key=lambda k: coeff_max[k] * d_max[k])
        axis = axes[i]
        raise LandscapeError(f"the {names[i]} range {axis.start:g}..{axis.stop:g} takes the weights to {reach:.3g}, "
                             f"beyond 1/16 of what {dtype} holds ({limit:.3g}; the rest is headroom for the sums "
                             f"of a forward pass); expected a smaller {names[i]} range, e.g. -1..1")
