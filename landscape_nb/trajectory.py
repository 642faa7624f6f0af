"""Trajectory PCA (Li et al. 2018, §7): the plane that best fits an optimizer's path.

``pca_directions`` takes checkpoints (state dicts, ``.pt`` paths, models or a zoo
example), centres them and returns the top principal directions as unit vectors,
with the explained-variance ratios. ``project_trajectory`` projects any checkpoints
onto any directions and says how far each one lies *off* the plane and what its
true loss is, so a path drawn on a contour plot is honest: a checkpoint far from the
plane is not at the point where it is drawn.

Memory: the checkpoints are never stacked into an n_checkpoints × n_params float64
matrix. The Gram matrix of their differences from ``final`` (k × k) is accumulated
over slices of the parameter vector, centred exactly (H G H), and the components are
formed slice by slice from its eigenvectors, so the working memory is the float32
output (n × n_params) plus a few k × slice float64 blocks (``CHUNK_BYTES`` each).
Measured for the zoo's ResNet-20 (resnet20-digits: 272,186 trainable values, 16
checkpoints, n=2) with ``tracemalloc`` (numpy's arrays; the torch profiler shows no
torch allocations, the checkpoints are only viewed): peak 6.9 MiB above the
checkpoints themselves (2.1 MiB of it the output), where a float64 checkpoint
matrix alone would take 33.2 MiB (the float32 checkpoints are 16.6 MiB); 0.2 s.
``tests/test_trajectory.py::test_pca_peak_memory_stays_below_the_dense_float64_matrix``
checks the bound on a model of that size.
"""
from __future__ import annotations

import dataclasses
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .directions import IGNORES, Directions, vector_dtype
from .errors import LandscapeError, check_choice, one_line, warn_user
from .params import (
    LAZY_CHECKPOINT,
    ParamLayout,
    check_finite,
    check_materialized,
    check_state_materialized,
    match_state_keys,
    to_numpy,
    unwrap_model,
)
from .spec import _callable_fingerprint, centre_of, made_around

CHUNK_BYTES = 1 << 21  # float64 bytes of one (n_checkpoints × slice) block in the streamed passes


# ------------------------------------------------------------ checkpoints ----

def load_state_dict_file(path, what: str = "checkpoint") -> Mapping[str, torch.Tensor]:
    """The state dict saved at ``path`` (``torch.load`` with ``weights_only=True``, so no code runs).

    Accepts ``torch.save(model.state_dict(), path)`` and a dict holding one under one of
    ``NESTED_STATE_KEYS`` (``"state_dict"``: the reference implementation's and many trainers'
    checkpoints, with ``epoch``, ``acc`` or an optimizer's state beside it; ``"model_state_dict"``:
    PyTorch's tutorial's). Key prefixes of wrappers are left for ``params.match_state_keys``.
    ``what`` names the file in messages (``"checkpoint 3"``, ``"--model-file2"``).

    Raises
    ------
    LandscapeError
        No such file; a file that is not a weights-only pickle (a whole pickled model, a foreign
        format), or that holds something other than a state dict.
    """
    try:
        with warnings.catch_warnings():  # a pickle.dump's file: torch warned of its protocol before our error
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise LandscapeError(f"{what}: no file {str(path)!r}; expected a path to a saved state dict") from None
    except IsADirectoryError:
        raise LandscapeError(f"{what}: {str(path)!r} is a directory; expected a saved state dict file") from None
    except Exception as exc:  # torch raises several kinds for foreign or damaged files
        if "UninitializedParameter" in str(exc) or "UninitializedBuffer" in str(exc):  # a lazy module's (s58)
            raise LandscapeError(f"{what}: {str(path)!r} holds weights not initialized yet {LAZY_CHECKPOINT}") from None
        why = _text_file(path) or _why_unreadable(exc)
        raise LandscapeError(
            f"{what}: cannot read {str(path)!r} as a weights-only state dict ({why}); save "
            "checkpoints with torch.save(model.state_dict(), path) (a whole pickled model: load it where you trust "
            "it and save its state_dict())"
        ) from None
    if not isinstance(obj, Mapping):
        raise LandscapeError(
            f"{what}: {str(path)!r} holds a {type(obj).__name__}; expected a state dict "
            "(torch.save(model.state_dict(), path))"
        )
    found = _state_dict_in(obj)
    if found is not None:
        return found
    raise LandscapeError(
        f"{what}: {str(path)!r} holds a dict of {sorted(map(str, obj))[:6]} with no state dict at its top level or "
        f"under {', '.join(repr(k) for k in NESTED_STATE_KEYS)}; expected torch.save(model.state_dict(), path), or "
        "a trainer's dict holding one under one of those keys (load yours and save the state dict it holds)"
    )


#: where trainers' checkpoint dicts keep the state dict: the reference's and many scripts', PyTorch's tutorial's,
#: and others'
NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "model_state")


def _state_dict_in(obj: Mapping) -> Mapping | None:
    """``obj`` itself when it is a state dict (tensors only), else the state dict a trainer's dict holds under one
    of ``NESTED_STATE_KEYS`` beside its epoch, optimizer or metrics, else None."""
    if _all_tensors(obj):
        return obj
    for key in NESTED_STATE_KEYS:
        if isinstance(obj.get(key), Mapping) and _all_tensors(obj[key]):
            return obj[key]
    return None


def _all_tensors(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _text_file(path) -> str:
    """"it is a text file (...)" for a file of text (a script, a config given by mistake), whose unpickler error
    ("Unsupported operand 105") says nothing to its reader; "" otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
        text = head.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
    if not text.strip() or any(c in text for c in "\x00\x01\x02\x03"):
        return ""
    first = next(line.strip() for line in text.splitlines() if line.strip())
    return f"it is a text file, first line {first[:60]!r}, not one torch.save wrote"


def _why_unreadable(exc: BaseException) -> str:
    """torch's reason in a few words: the class a weights-only load would not unpickle, else its first line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it pickles a {found.group(1)}, which a weights-only load does not rebuild"
    found = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", text, re.S)
    if found and found.group(1).strip():  # the unpickler's own words, not the note about weights_only's default
        return f"not a file torch.save wrote, it seems; torch's unpickler said: {' '.join(found.group(1).split())}"
    first = one_line((text.strip().splitlines() or [""])[0], 160, "left out")
    return f"not a file torch.save wrote, it seems; torch said {type(exc).__name__}: {first}"


def as_checkpoints(trajectory, first: int = 0) -> list[Mapping[str, torch.Tensor]]:
    """State dicts from a zoo example (its ``.trajectory``), a ``TrajectoryRecorder`` (its
    ``.checkpoints``), or a sequence of state dicts, ``.pt`` paths (read with ``weights_only=True``)
    or models; messages number them from ``first``. A trainer's dict holding the state dict (under
    one of ``NESTED_STATE_KEYS``, beside its epoch or optimizer) is read as its file would be."""
    if hasattr(trajectory, "trajectory") and not isinstance(trajectory, (Sequence, Mapping)):
        trajectory = trajectory.trajectory
    elif hasattr(trajectory, "checkpoints") and not isinstance(trajectory, (Sequence, Mapping)):
        trajectory = trajectory.checkpoints
    if isinstance(trajectory, (str, Path, Mapping, nn.Module)) or not isinstance(trajectory, Sequence):
        pattern = isinstance(trajectory, str) and any(c in trajectory for c in "*?[")
        raise LandscapeError(
            f"trajectory of type {type(trajectory).__name__}; expected a list of checkpoints (state dicts, "
            "paths to saved state dicts, or models) or a zoo example with a .trajectory"
            + (f": for the files matching it, sorted(glob.glob({trajectory!r})) in training order" if pattern else "")
        )
    out = []
    for k, item in enumerate(trajectory, start=first):
        if isinstance(item, nn.Module):
            check_materialized(item, f"checkpoint {k}")  # a lazy one: torch's error (re-trial s57)
            out.append(item.state_dict())
        elif isinstance(item, (str, Path)):
            if not str(item).strip():  # Path("") is "." : read as "a directory"
                raise LandscapeError(f"checkpoint {k} is an empty path; expected the path to a saved state dict")
            out.append(load_state_dict_file(Path(item), f"checkpoint {k}"))
        elif isinstance(item, Mapping):  # a trainer's dict as its file is read (trial s35: "another architecture")
            found = _state_dict_in(item)
            check_state_materialized(item if found is None else found, f"checkpoint {k}")
            out.append(item if found is None else found)
        else:
            raise LandscapeError(
                f"checkpoint {k} is a {type(item).__name__}; expected a state dict, a path to one, or a model"
            )
    return out


def in_training_order(trajectory, who: str) -> tuple[Any, list[int] | None]:
    """``(trajectory, order)``: checkpoint files that differ in one number alone (``ckpt/epoch10.pt``), given in
    the order text sorts them (a shell's glob, ``sorted()``: epoch0, epoch1, epoch10, epoch11, epoch2, ...), put
    in the order of that number, with a warning naming ``who``; given in another order that is not the numbers'
    (reversed, picked by hand), or beside files without the number (``init.pt``, ``final.pt``: where those go is
    not known), kept with a warning; else as given. The glob's order drew a PCA path that crossed itself and
    ended away from the centre, with no word (trial s59). ``order`` lists the given positions in the new order
    (None: as given). State dicts and models are taken in the order given."""
    if not (isinstance(trajectory, Sequence) and not isinstance(trajectory, (str, Mapping)) and len(trajectory) > 2
            and all(isinstance(item, (str, Path)) for item in trajectory)):
        return trajectory, None
    texts = [str(item) for item in trajectory]
    groups: dict[str, list[int]] = {}  # the files by their names with the digits left out: one run's
    for k, text in enumerate(texts):
        groups.setdefault(re.sub(r"\d+", "#", text), []).append(k)
    members = max(groups.values(), key=len)
    pieces = [re.split(r"(\d+)", texts[k]) for k in members]
    differ = [j for j in range(len(pieces[0])) if len({p[j] for p in pieces}) > 1]
    if len(members) < 3 or len(differ) != 1:  # one number apart, at one place (odd places hold the digits)
        return trajectory, None
    numbers = [int(p[differ[0]]) for p in pieces]
    if len(set(numbers)) < len(numbers) or numbers == sorted(numbers):
        return trajectory, None
    try:
        tail = os.path.commonpath(texts)
    except ValueError:  # absolute and relative paths mixed: shown in full
        tail = None
    alike = len({Path(t).name for t in texts}) < len(texts)  # the folders tell the files apart (steps10/model.pt)
    shown = lambda i: (os.path.relpath(str(i), tail) if tail else str(i)) if alike else Path(str(i)).name
    names = lambda items: ", ".join(shown(i) for i in items[:6]) + (", ..." if len(items) > 6 else "")
    others = [trajectory[k] for k in range(len(texts)) if k not in members]
    if others:  # where init.pt or final.pt go among them is not known: said, not changed
        warn_user(f"{who}: the checkpoint files {names([trajectory[k] for k in members])} are given in the order "
                  f"text sorts them (a shell's glob, sorted()), not that of the number in their names, beside "
                  f"{names(others)}, which has none; they are taken as given, as training order: give them in "
                  "training order (in the shell, e.g. `ls -v`, or name them so that text sorts them so)")
        return trajectory, None
    if texts != sorted(texts):  # an order of the user's own: said, not changed
        warn_user(f"{who}: the checkpoint files are given in the order {names(list(trajectory))}, not in the order "
                  "of the number in their names; they are taken as given, as training order: if the numbers are "
                  "the training steps, give them in that order")
        return trajectory, None
    order = sorted(range(len(numbers)), key=numbers.__getitem__)
    ordered = [trajectory[k] for k in order]
    warn_user(f"{who}: the checkpoint files were given in the order {names(list(trajectory))}, the order text "
              f"sorts them in (a shell's glob, sorted()), not that of the number in their names; they are taken as "
              f"{names(ordered)}, the training order: to keep yours, pass the loaded state dicts, "
              "[torch.load(f) for f in files]")
    return ordered, order


def default_labels(trajectory, k: int, *, last_is_final: bool) -> list[str]:
    """The ``k`` checkpoints' names as ``trajectory`` (as given to ``as_checkpoints``) tells them: its own
    ``labels`` where it has ``k`` of them (a zoo example's trajectory: "init", "epoch 1", ...; a
    ``TrajectoryRecorder``'s: "step s"); a file's name without the suffix ("e10" for ``ckpt/e10.pt``) where those
    names are distinct; else "checkpoint i". The last is "final" where it is the model at the centre
    (``last_is_final``), "final (its name)" where it has one. The first of a list was called "init" however late
    it was saved (a trial's first checkpoint came after 20 steps, s40)."""
    if hasattr(trajectory, "trajectory") and not isinstance(trajectory, (Sequence, Mapping)):  # a zoo example
        trajectory = trajectory.trajectory
    named = getattr(trajectory, "labels", None)
    if isinstance(named, Sequence) and not isinstance(named, str) and len(named) == k:
        labels = [str(s) for s in named]
    else:
        files = [Path(item).stem if isinstance(item, (str, Path)) and Path(item).stem else None for item in trajectory]
        given = [n for n in files if n]
        distinct = len(set(given)) == len(given)
        labels = [n if n and distinct else f"checkpoint {i}" for i, n in enumerate(files)]
    if last_is_final:
        labels[-1] = "final" if labels[-1] == f"checkpoint {k - 1}" else f"final ({labels[-1]})"
    return labels


def _warn_if_centred_off_the_path(gram: np.ndarray, trajectory) -> None:
    """Warn where ``final`` is farther from every checkpoint than the checkpoints are from each other (``gram``:
    the Gram matrix of their offsets from ``final``): the plane is then centred away from the path, as with an
    untrained model given for the trained one (trial s40: said by the figure's note alone); or where it is the
    first checkpoint and no other (the untrained model rebuilt with the training seed)."""
    sq = np.diag(gram)
    apart = float((sq[:, None] + sq[None, :] - 2 * gram).max())
    nearest = int(np.argmin(sq))
    if sq[0] == 0 and float(sq[1:].min(initial=np.inf)) > 0:  # a model rebuilt with the training seed (re-trial s41)
        name = default_labels(trajectory, len(sq), last_is_final=False)[0]
        warn_user(f"landscape_nb: final, the centre of the plane, holds the weights of the first checkpoint ({name}), where the "
                  "path starts, not of a later one: the path runs away from the centre, not towards it; expected "
                  "final to be the model the checkpoints lead to (the trained model, e.g. the last checkpoint "
                  "loaded), not the untrained one")
        return
    if float(sq[nearest]) > max(apart, 0.0):
        name = default_labels(trajectory, len(sq), last_is_final=False)[nearest]
        warn_user(f"landscape_nb: final, the centre of the plane, is farther from every checkpoint (the nearest, {name}, at "
                  f"{float(np.sqrt(sq[nearest])):.4g}) than the checkpoints are from each other (at most "
                  f"{np.sqrt(max(apart, 0.0)):.4g}): the plane is centred away from the training path, which will lie "
                  "far off it; expected final to be the model the checkpoints lead to (the trained model, e.g. the "
                  "last checkpoint loaded), not an untrained or other model, and checkpoints up to it")


def _check_checkpoints(states: Sequence[Mapping], layout: ParamLayout, final: nn.Module,
                       trajectory=None) -> list[Mapping]:
    """``states`` with the key prefixes of wrappers they were saved from removed (``params.match_state_keys``),
    after refusing checkpoints of another architecture than ``final`` (``layout``'s), and NaN or inf in them or
    in it; messages name a checkpoint's file where ``trajectory`` (as given) has one."""
    check_finite(layout, layout.tensors(final), " (final, the centre of the plane)")
    names = list(unwrap_model(final).state_dict())
    states = [match_state_keys(sd, names) for sd in states]
    items = trajectory if isinstance(trajectory, Sequence) and not isinstance(trajectory, (str, Mapping)) else []
    for k, sd in enumerate(states):
        path = items[k] if k < len(items) and isinstance(items[k], (str, Path)) else None
        where = f"checkpoint {k}" + (f" ({str(path)!r})" if path is not None else "")
        for e in layout.entries:
            if e.name not in sd:
                raise LandscapeError(
                    f"{where} has no tensor {e.name!r} that the model has; the checkpoints come from another "
                    "architecture than `final`: pass checkpoints saved from this model"
                )
            t = torch.as_tensor(sd[e.name])
            if tuple(t.shape) != e.shape:
                raise LandscapeError(
                    f"{where}: tensor {e.name!r} has shape {tuple(t.shape)}, the model's has {e.shape}; the "
                    "checkpoints come from another architecture: pass checkpoints saved from this model"
                )
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):  # the SVD failed deep in numpy, and a
                raise LandscapeError(                                          # projection came out NaN silently
                    f"{where}: tensor {e.name!r} holds {int((~torch.isfinite(t)).sum())} non-finite value(s) "
                    "(NaN or inf); expected finite checkpoints: leave out the ones saved after training diverged")
        extra = [key for key, v in sd.items() if key not in names and isinstance(v, torch.Tensor)]
        if extra:  # a PCA over the shared tensors only came back with no word (trial s40)
            raise LandscapeError(
                f"{where} has {len(extra)} tensor(s) the model has not ({', '.join(map(repr, extra[:5]))}"
                f"{', ...' if len(extra) > 5 else ''}); the checkpoints come from another architecture than "
                "`final`, as load_state_dict would say: pass checkpoints saved from this model (or drop those "
                "entries from them)")
    return states


def _pieces(layout: ParamLayout, n_rows: int):
    """(name, start, stop, flat offset) pieces of the flat vector, each block about ``CHUNK_BYTES``."""
    chunk = max(1024, CHUNK_BYTES // (8 * max(1, n_rows)))
    for e, (a, _) in zip(layout.entries, layout.offsets()):
        for s in range(0, e.numel, chunk):
            yield e.name, s, min(e.numel, s + chunk), a + s


def _values(t, s: int, e: int) -> np.ndarray:
    return to_numpy(torch.as_tensor(t).reshape(-1)[s:e])  # bfloat16 as float32 (trial s35: numpy has none)


def _block(states: Sequence[Mapping], piece, ref: Mapping) -> np.ndarray:
    """Rows θ_i − θ_ref of one piece, float64, filled in place (no per-row temporaries)."""
    name, s, t, _ = piece
    out = np.empty((len(states), t - s))
    for i, sd in enumerate(states):
        out[i] = _values(sd[name], s, t)
    out -= _values(ref[name], s, t)
    return out


def _frozen(model: nn.Module) -> list[str]:
    """The names of ``model``'s frozen (``requires_grad=False``) parameters."""
    return [name for name, p in unwrap_model(model).named_parameters() if not p.requires_grad]


def _frozen_off_plane(final: nn.Module, layout: ParamLayout) -> ParamLayout:
    """The frozen (``requires_grad=False``) parameters of ``final`` that ``layout`` leaves out (kind ``"frozen"``):
    no direction moves them, so where a checkpoint differs from ``final`` there, it is off the plane."""
    every = ParamLayout.of(final, frozen=_frozen(final))
    return ParamLayout(tuple(e for e in every.entries if e.kind == "frozen" and e not in layout.entries))


def _left_out_span(states: Sequence[Mapping], layout: ParamLayout, masked: set[str], ref: Mapping,
                   gram: np.ndarray) -> tuple[list[str], int]:
    """The ``masked`` tensors in which the checkpoints differ from each other, and how many directions the
    checkpoints span with them (``gram``: the Gram matrix of their differences from ``ref`` without them)."""
    differ, full, k = [], gram.copy(), len(states)
    for piece in _pieces(layout, k):
        if piece[0] in masked:
            block = _block(states, piece, ref)
            full += block @ block.T
            if piece[0] not in differ and bool((block != block[:1]).any()):
                differ.append(piece[0])
    centre = np.eye(k) - 1.0 / k
    evals = np.clip(np.linalg.eigvalsh(centre @ full @ centre)[::-1], 0.0, None)
    return differ, int((evals > 1e-12 * evals.sum()).sum()) if evals.sum() > 0 else 0


def _repeats(states: Sequence[Mapping], layout: ParamLayout, gram: np.ndarray) -> list[tuple[int, int]]:
    """(j, i) for each checkpoint j equal to an earlier checkpoint i in every tensor of ``layout``: candidates
    are those ``gram`` (of the differences from the centre) puts within rounding of each other, confirmed with
    ``torch.equal``."""
    diag = np.diag(gram)
    near = diag[:, None] + diag[None, :] - 2 * gram <= 1e-9 * max(float(diag.max(initial=0.0)), 1e-300)
    out: dict[int, int] = {}
    for i, j in zip(*np.nonzero(np.triu(near, 1))):  # row-major: the earliest i first for each j
        if j not in out and all(torch.equal(torch.as_tensor(states[i][e.name]), torch.as_tensor(states[j][e.name]))
                                for e in layout.entries):
            out[int(j)] = int(i)
    return sorted(out.items())


def _masked_layout(layout: ParamLayout, ignore: str | None) -> set[str]:
    return {e.name for e in layout.entries if ignore == "biasbn" and len(e.shape) <= 1}


# ---------------------------------------------------------------- PCA ----

def pca_directions(
    trajectory,
    final: nn.Module | None = None,
    n: int = 2,
    *,
    ignore: str | None = "biasbn",
    data=None,
    loss_fn=None,
    target_key: str | int | None = "labels",
) -> Directions:
    """The ``n`` principal directions of a training trajectory (unit vectors), for a plane centred at ``final``.

    >>> ex = lnb.zoo.load("mlp-digits")
    >>> d = lnb.pca_directions(ex.trajectory, final=ex.model, n=2)
    >>> d.provenance["explained_variance_ratio"]     # e.g. [0.83, 0.09]
    >>> surf = lnb.compute_surface(ex.model, ex.test, d, **d.suggested_grid(21))  # x_range, y_range through 0
    >>> lnb.plot.pca_contour(surf, lnb.project_trajectory(ex.trajectory, d, final=ex.model, data=ex.test))

    The checkpoints (all of them, as given: the zoo's include the initial and the
    final weights) are centred by their mean and the directions are the leading
    right singular vectors of that centred matrix (Li et al. 2018, §7). With
    ``ignore="biasbn"`` 1-D tensors (biases, norm-layer weights) are left out of the
    PCA and get a zero direction, as for random directions. Frozen
    (``requires_grad=False``) parameters of ``final`` are not in the directions
    either (``compute_surface`` never moves them): where the checkpoints differ
    there, that difference is off the plane, counted in ``path_distance`` and
    ``path_norm`` but not in the explained variance, and a ``UserWarning`` names
    them (``project_trajectory``). Signs are fixed so the
    first checkpoint has a negative coordinate on each axis (the path runs towards
    ``final`` at the origin). A plane needs at least 3 checkpoints (k checkpoints
    span at most k − 1 dimensions).

    ``provenance`` holds ``explained_variance_ratio`` (fractions of the total
    variance of the centred checkpoints over the tensors the PCA covers: the
    trainable ones, less those ``ignore`` leaves out; they sum to ≤ 1), the projected path
    (``path_x``, ``path_y``, ``path_distance``), axis labels with the variance and
    ``x_range``/``y_range``/``z_range`` (``[start, stop]``, covering the path with a margin;
    ``d.suggested_grid(num)`` moves them so a point falls on the centre, as above). With ``data`` the
    checkpoints' true losses are in ``path_loss``.

    Parameters
    ----------
    trajectory : sequence or zoo Example
        k checkpoints in training order: state dicts, paths to ``.pt`` state dicts
        (read with ``weights_only=True``) or models; or an object with a
        ``.trajectory`` (and ``.model``, used as ``final`` when it is not given).
    final : torch.nn.Module, optional
        The model the checkpoints belong to and the centre of the plane (the
        trained model). Defaults to the example's ``.model`` or to the last
        checkpoint when that is a model.
    n : int, optional
        Number of principal directions, at most k − 1: 1 for a line, 2 for a plane.
    ignore : {"biasbn", None}, optional
        ``"biasbn"``: 1-D tensors are left out of the PCA (zero direction).
    data : tuple of tensors, optional
        ``(inputs, targets)`` to evaluate each checkpoint's true loss on.
    loss_fn : callable, optional
        The loss for ``data`` (default: cross-entropy).
    target_key : str or int, optional
        Where the targets are in dict batches of ``data`` (default ``"labels"``) or tuples of more than two
        tensors (default the last), as ``compute_surface``'s (``data.read_data``).

    Returns
    -------
    Directions
        Orthonormal vectors of shape (n, n_params), float32 (float64 for a float64 model; unit
        Euclidean norm, so coordinates are distances in weight space), with the provenance above.

    Raises
    ------
    LandscapeError
        An unknown ``ignore``, a bad ``n``, no ``final``, fewer than n + 1
        checkpoints, checkpoints of another architecture or that do not differ,
        or an unreadable checkpoint file.

    References
    ----------
    H. Li, Z. Xu, G. Taylor, C. Studer and T. Goldstein, "Visualizing the Loss
    Landscape of Neural Nets", NeurIPS 2018, §7 (trajectories by PCA directions).
    """
    check_choice("ignore", ignore, IGNORES)
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        whole = isinstance(n, float) and n.is_integer() and n >= 1  # n=2.0 "expected a positive number" (trial s59)
        raise LandscapeError(f"n={n!r}; expected a whole number of principal directions, at least 1: 1 (a line), "
                             "2 (a plane) or 3 (a volume)" + (f": n={int(n)}" if whole else ""))
    if final is None and hasattr(trajectory, "model") and isinstance(trajectory.model, nn.Module):
        final = trajectory.model
    trajectory, _ = in_training_order(trajectory, "landscape_nb.pca_directions")
    states = as_checkpoints(trajectory)
    if final is None:
        if states and isinstance(trajectory, Sequence) and isinstance(trajectory[-1], nn.Module):
            final = trajectory[-1]
        else:
            raise LandscapeError(
                "pca_directions needs the model the checkpoints belong to: pass final=model (the trained "
                "model, the centre of the plane)"
            )
    if len(states) < n + 1:
        raise LandscapeError(
            f"{len(states)} checkpoint(s) for n={n} principal directions; expected at least {n + 1} (k checkpoints "
            f"span at most k − 1 directions): "
            + (f"record more often, TrajectoryRecorder(model, every=...) below every={trajectory.every}, or train "
               "longer" if isinstance(getattr(trajectory, "every", None), int) and hasattr(trajectory, "checkpoints")
               else "save more checkpoints during training")  # a recorder's own knob (trial s59)
            + (f", or ask for fewer directions (n={len(states) - 1})" if 1 < len(states) < n + 1 else "")
        )
    if isinstance(final, nn.Module):
        check_materialized(unwrap_model(final), "final")  # a lazy one: "final's", not "the model's" (re-trial s57)
    layout = ParamLayout.of(final)
    states = _check_checkpoints(states, layout, final, trajectory)
    masked = _masked_layout(layout, ignore)
    k = len(states)
    ref = {e.name: t.detach() for e, t in zip(layout.entries, layout.tensors(final))}

    # Pass 1: Gram matrix of the differences from `final`, G = D Dᵀ (k × k), float64 per slice.
    gram = np.zeros((k, k))
    for piece in _pieces(layout, k):
        if piece[0] not in masked:
            block = _block(states, piece, ref)
            gram += block @ block.T
    repeats = _repeats(states, layout, gram)
    if repeats:  # trial s35: the final model passed twice moved the directions without a word
        said = ", ".join(f"{j} is checkpoint {i}" for j, i in repeats[:5]) + (", ..." if len(repeats) > 5 else "")
        warn_user(f"landscape_nb: checkpoints repeat earlier ones ({said}: the same weights): each copy weighs in the PCA once "
                  "more, so it changes the directions and the explained variance; pass each checkpoint once (e.g. "
                  "the final model once: a TrajectoryRecorder records each step once)")
    centre = np.eye(k) - 1.0 / k  # centring the rows removes the reference point exactly
    gram_c = centre @ gram @ centre
    evals, evecs = np.linalg.eigh((gram_c + gram_c.T) / 2)
    order = np.argsort(evals)[::-1]
    evals, evecs = np.clip(evals[order], 0.0, None), evecs[:, order]
    total = float(evals.sum())
    if not total > 0 or evals[n - 1] <= 1e-12 * total:
        left_out, rank = _left_out_span(states, layout, masked, ref, gram)  # trial s35: biases differed only
        fix = ": pass checkpoints from different training steps" + ("" if total > 0 else (
            f" (model.state_dict() appended while training holds the same tensors {k} times, the model's latest: keep "
            "copies, {k: v.clone() for k, v in model.state_dict().items()})"))  # trial s37
        if left_out and (rank >= n or not total > 0):
            fix = (f"; they differ {'' if total > 0 else 'only '}in 1-D tensors {left_out[:5]} (biases, norm-layer "
                   "weights), which ignore='biasbn' leaves out of the PCA: pass ignore=None to include them"
                   + (f" (with them they span {rank} direction(s): ask for n={rank} too)" if rank < n else ""))
        raise LandscapeError(
            f"the {k} checkpoints span fewer than {n} independent directions (variances {evals[:n].tolist()}); "
            f"expected checkpoints that differ from each other{fix}"
        )
    _warn_if_centred_off_the_path(gram, trajectory)  # after the refusals: checkpoints that all repeat are said so
    ratios = (evals / total)[:n]
    # Pass 2: components V = Σ⁻¹ Uᵀ (centred D), slice by slice, into the float32 (float64) output.
    coef = (evecs[:, :n].T @ centre) / np.sqrt(evals[:n])[:, None]  # (n, k)
    vectors = np.zeros((n, layout.n_params), dtype=np.float64 if vector_dtype(final) == torch.float64 else np.float32)
    for piece in _pieces(layout, k):
        if piece[0] not in masked:
            vectors[:, piece[3]:piece[3] + piece[2] - piece[1]] = coef @ _block(states, piece, ref)
    vectors_t = torch.from_numpy(vectors)  # shares memory: the sign flip below is in place
    pcs = [f"PC{i + 1} ({100 * r:.1f}% of variance)" for i, r in enumerate(ratios)]
    prov: dict[str, Any] = {
        "scheme": "pca", "ignore": ignore, "n_checkpoints": k, **centre_of(final),
        # held fixed, as random_directions records them: the figures' hover names them (the PCA's said nothing, s40)
        "zeroed": [e.name for e in layout.entries if e.name in masked],
        **({"excluded": [f"{name} (frozen)" for name in frozen]} if (frozen := _frozen(final)) else {}),
        "explained_variance_ratio": [float(r) for r in ratios],
        "x_label": pcs[0], **({"y_label": pcs[1]} if n > 1 else {}), **({"z_label": pcs[2]} if n > 2 else {}),
        "norms": np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)).tolist(),
    }
    d = Directions(vectors_t, layout, prov)
    path = project_trajectory(states, d, final=final, data=data, loss_fn=loss_fn, target_key=target_key)
    path = dataclasses.replace(path, labels=default_labels(trajectory, k, last_is_final=bool(path.norm[-1] == 0)))
    flip = [bool(c[0] > 0) for c in path.coords.T]
    for i, f in enumerate(flip):
        if f:
            vectors[i] *= -1
    path = path.flipped(flip)
    prov.update(path.as_provenance())
    for axis, c in zip("xyz", path.coords.T):  # z too: a volume's PC3 got -1..1 for a path over -2.84..1.35 (s37)
        lo, hi = min(float(c.min()), 0.0), max(float(c.max()), 0.0)
        pad = 0.25 * (hi - lo) or 1.0
        prov[f"{axis}_range"] = [lo - pad, hi + pad]
    return d


# --------------------------------------------------------- projection ----

@dataclass(frozen=True, eq=False)
class ProjectedPath:
    """Checkpoints projected onto the directions of a surface centred at ``final``.

    ``coords[i]`` are checkpoint i's least-squares coordinates (x, y) in the plane;
    ``distance[i]`` is the Euclidean distance (in weight space, over every
    parameter, including those the directions ignore and frozen ones) from the checkpoint to
    its projection; ``norm[i]`` is its distance from ``final``. A point with
    ``distance`` comparable to ``norm`` is nowhere near where it is drawn. ``loss``
    (with ``data``) is each checkpoint's true loss, to compare with the surface's
    value at its projection. Pass it to ``plot.contour(..., trajectory=path)``.
    """

    coords: np.ndarray  # (k, n)
    distance: np.ndarray  # (k,)
    norm: np.ndarray  # (k,)
    loss: np.ndarray | None = None
    labels: list[str] = field(default_factory=list)
    directions: str | None = None  # the fingerprint of the directions projected onto: plots check their surface's
    mode: str | None = None  # how ``loss`` was evaluated ("eval", "bn-recompute"): plots compare the surface's
    left_out: np.ndarray | None = None  # (k,): the part of ``distance`` in tensors no direction moves (frozen ones,
    # biases and norm weights under ignore="biasbn"); plots say whether the distance lies there
    bn_data: str | None = None  # the fingerprint of ``bn_data`` the losses' BN statistics came from (None: the data)
    data: str | None = None  # the fingerprint of the data ``loss`` was evaluated on: plots compare their surface's
    loss_fn: str | None = None  # the fingerprint of the loss ``loss`` is of (None: the default cross-entropy), as well

    @property
    def x(self) -> np.ndarray:
        return self.coords[:, 0]

    @property
    def y(self) -> np.ndarray | None:
        return self.coords[:, 1] if self.coords.shape[1] > 1 else None

    @property
    def relative_distance(self) -> np.ndarray:
        return self.distance / np.where(self.norm > 0, self.norm, 1.0)

    def flipped(self, flip: Sequence[bool]) -> "ProjectedPath":
        signs = np.array([-1.0 if f else 1.0 for f in flip])
        # onto other directions (signs flipped): their fingerprint is not known
        return dataclasses.replace(self, coords=self.coords * signs, labels=list(self.labels), directions=None)

    def as_provenance(self) -> dict:
        out = {"path_x": self.x.tolist(), "path_distance": self.distance.tolist(), "path_norm": self.norm.tolist()}
        if self.y is not None:
            out["path_y"] = self.y.tolist()
        if self.loss is not None:
            out["path_loss"] = self.loss.tolist()
        if self.left_out is not None:
            out["path_left_out"] = self.left_out.tolist()
        out["path_labels"] = list(self.labels)
        return out


def project_trajectory(trajectory, directions: Directions, *, final: nn.Module, data=None, loss_fn=None,
                       labels: Sequence[str] | None = None, mode: str = "eval", bn_data=None,
                       target_key: str | int | None = "labels") -> ProjectedPath:
    """Project checkpoints onto ``directions`` (any, not only PCA) around ``final``.

    Coordinates solve the least-squares problem ``min_c ‖θ_i − θ_final − cᵀD‖`` (for
    orthonormal PCA directions they are plain inner products); ``distance`` is the
    norm of the residual, over every parameter: frozen (``requires_grad=False``)
    ones that no direction moves count wholly (a ``UserWarning`` names those that
    differ from ``final``, with their share). With ``data`` each checkpoint's true loss (its parameters
    and buffers loaded, eval mode) is evaluated, so a plot can show both the loss
    drawn at the projection and the loss the optimizer actually had.

    Parameters
    ----------
    trajectory : sequence or zoo Example
        k checkpoints (state dicts, ``.pt`` paths or models), as for ``pca_directions``.
    directions : Directions
        ``n`` linearly independent directions over ``final``'s trainable tensors.
    final : torch.nn.Module
        The model at the origin of the directions.
    data : tuple of tensors, optional
        ``(inputs, targets)``; with it each checkpoint's true loss is evaluated.
    loss_fn : callable, optional
        The loss for ``data`` (default: cross-entropy).
    labels : sequence of str, optional
        One label per checkpoint, ``k`` in all (default: ``default_labels``: "init", "epoch i"
        for a zoo example's, "step s" for a recorder's, a file's name without its suffix, else
        "checkpoint i"; the last is called "final" only when its trainable weights are exactly
        ``final``'s, i.e. it is the model at the centre).
    mode : {"eval", "bn-recompute"}
        How the true losses are evaluated, as ``compute_surface``'s ``mode``: pass the surface's,
        so that a checkpoint's true loss and the plane's loss under it differ by the projection
        only (a BatchNorm plane in "bn-recompute" showed 0.35 where the eval-mode true loss of
        the same model was 0.56, trial s35); the plots say where they differ.
    bn_data : data, optional
        With ``mode="bn-recompute"``: the data BatchNorm statistics are re-estimated on, as
        ``compute_surface``'s ``bn_data`` (pass the surface's; default the evaluation data). The
        plots say where the surface's and the path's differ.
    target_key : str or int, optional
        Where the targets are in dict batches of ``data`` (default ``"labels"``) or tuples of more than two
        tensors (default the last), as ``compute_surface``'s (``data.read_data``).

    Returns
    -------
    ProjectedPath
        ``coords`` (k, n) in direction units, ``distance`` and ``norm`` (k,) in
        weight-space units (Euclidean), ``loss`` (k,) with ``data``, and ``labels``;
        ``directions`` (their fingerprint: ``plot.contour`` refuses the path on a surface
        of other directions), ``mode``, ``bn_data`` and ``data`` (their fingerprints: the plots warn
        where the surface's differ) and ``left_out`` (k,), the part of ``distance`` in tensors no
        direction moves.

    Raises
    ------
    LandscapeError
        ``directions`` not a ``Directions`` or of another architecture, checkpoints
        of another architecture, linearly dependent directions, a wrong number
        of labels, or ``bn_data`` with ``mode="eval"``.

    Warns
    -----
    UserWarning
        Where ``directions`` were made around other weights than ``final``'s (a PCA of
        another run, or another final model).

    References
    ----------
    H. Li et al., "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018, §7.
    """
    if not isinstance(directions, Directions):
        raise LandscapeError(f"directions of type {type(directions).__name__}; expected Directions "
                             "(from pca_directions, random_directions, ...)")
    if isinstance(final, nn.Module):
        check_materialized(unwrap_model(final), "final")  # a lazy one: torch's error (re-trial s57)
    trajectory, order = in_training_order(trajectory, "landscape_nb.project_trajectory")
    if order is not None and labels is not None and len(labels) == len(order):  # yours, named as the files were
        labels = [labels[k] for k in order]
    states = as_checkpoints(trajectory)
    if made_around(directions.provenance, final) is False:  # trial s37: every coordinate shifted, with no word
        warn_user(f"landscape_nb.project_trajectory: these {directions.scheme} directions were made around another "
                  f"model's weights than final's ({type(final).__name__}), so the coordinates are offsets from "
                  "another point than the centre of their plane: pass final= the model they were made around (the "
                  "final model of the PCA, the model the surface was computed at)")
    layout = ParamLayout.of(final, frozen=directions.layout.frozen_names)  # a path's directions move some frozen
    if layout != directions.layout:
        directions.layout.check_model(final)
    off_plane = _frozen_off_plane(final, layout)
    states = _check_checkpoints(states, ParamLayout(layout.entries + off_plane.entries), final, trajectory)
    k, n = len(states), directions.n
    ref = {name: t.detach() for name, t in unwrap_model(final).named_parameters()}
    dvec = directions.vectors.numpy()  # float32 view; slices are widened to float64 one at a time
    dd, rhs, sq = np.zeros((n, n)), np.zeros((k, n)), np.zeros(k)
    for piece in _pieces(layout, k):
        a, b = piece[3], piece[3] + piece[2] - piece[1]
        block, dsl = _block(states, piece, ref), dvec[:, a:b].astype(np.float64)
        dd += dsl @ dsl.T
        rhs += block @ dsl.T
        sq += np.einsum("ij,ij->i", block, block)
    try:
        coords = np.linalg.solve(dd, rhs.T).T
    except np.linalg.LinAlgError:
        raise LandscapeError("the directions are linearly dependent, so projections onto them are not unique; "
                             "orthogonalize them (lnb.orthogonalize) or use other directions") from None
    res, left_out = np.zeros(k), np.zeros(k)  # left_out: in tensors no direction moves (biases under biasbn)
    for piece in _pieces(layout, k):
        a, b = piece[3], piece[3] + piece[2] - piece[1]
        block, dsl = _block(states, piece, ref), dvec[:, a:b]
        block -= coords @ dsl.astype(np.float64)
        part = np.einsum("ij,ij->i", block, block)
        res += part
        if not dsl.any():
            left_out += part
    moved: dict[str, float] = {}  # frozen parameters: the directions cannot move them, so all of it is off the plane
    for piece in _pieces(off_plane, k):
        block = _block(states, piece, ref)
        sq_piece = np.einsum("ij,ij->i", block, block)
        sq, res, left_out = sq + sq_piece, res + sq_piece, left_out + sq_piece
        moved[piece[0]] = moved.get(piece[0], 0.0) + float(sq_piece.sum())
    moved = {name: v for name, v in moved.items() if v > 0}
    if moved:  # trial s35: left out, a frozen fc1 made a distance of 4.80 off the plane read 1.10
        share = 100 * sum(moved.values()) / res.sum()
        more = f" and {len(moved) - 5} more" if len(moved) > 5 else ""
        warn_user(
            f"landscape_nb: final's frozen (requires_grad=False) parameters {list(moved)[:5]}{more} differ between the "
            "checkpoints "
            "and final; the directions cannot move them, so that difference is off the plane: it is counted in the "
            f"distances from final and from the plane ({share:.0f}% of the squared distance off the plane, summed "
            "over the checkpoints) and left out of a PCA and its explained variance. To have the plane move them, "
            "unfreeze them in final (requires_grad_(True)) before making the directions")
    mode = {"bn": "bn-recompute"}.get(mode, check_choice("mode", mode, ("eval", "bn-recompute", "bn")))
    from .evaluate import EvalSettings

    if bn_data is not None and mode != "bn-recompute":
        raise LandscapeError("bn_data given with mode='eval'; expected mode='bn-recompute' (bn_data is where BatchNorm "
                             "statistics are re-estimated), or no bn_data")
    loss, bn_fingerprint, data_fingerprint = (None, None, None) if data is None else _checkpoint_losses(
        states, final, data, loss_fn=loss_fn, settings=EvalSettings(mode=mode, target_key=target_key), bn_data=bn_data)
    if labels is None:
        labels = default_labels(trajectory, k, last_is_final=bool(sq[-1] == 0))
    elif len(labels) != k:
        raise LandscapeError(f"{len(labels)} labels for {k} checkpoints; expected one label per checkpoint")
    return ProjectedPath(coords, np.sqrt(res), np.sqrt(sq), loss, [str(s) for s in labels],
                         directions=directions.fingerprint(), mode=None if data is None else mode,
                         left_out=np.sqrt(left_out), bn_data=bn_fingerprint, data=data_fingerprint,
                         loss_fn=None if data is None else _callable_fingerprint(loss_fn))


def checkpoint_losses(trajectory, model: nn.Module, data, *, loss_fn=None, settings=None,
                      bn_data=None) -> np.ndarray:
    """Mean loss of each checkpoint (parameters, frozen ones too, and floating buffers) on ``data``, eval mode,
    shape (k,).

    Uses the surface evaluator: the checkpoints are the directions θ_i − θ_model and
    checkpoint i is the point with coordinate 1 on direction i. ``settings``
    (``evaluate.EvalSettings``, default: all samples, eval mode, fp32) evaluates them as a
    surface computed with those settings evaluates its points (its ``max_samples``
    subset, its ``mode`` and ``bn_data``), so the losses compare with the surface's.
    """
    return _checkpoint_losses(trajectory, model, data, loss_fn=loss_fn, settings=settings, bn_data=bn_data)[0]


def _checkpoint_losses(trajectory, model: nn.Module, data, *, loss_fn=None, settings=None,
                       bn_data=None) -> tuple[np.ndarray, str | None, str]:
    """``(checkpoint_losses(...), the fingerprint of bn_data or None, that of the data evaluated)``."""
    from .evaluate import Evaluator
    from .params import flatten

    names = list(unwrap_model(model).state_dict())
    states = [match_state_keys(sd, names) for sd in as_checkpoints(trajectory)]
    layout = ParamLayout.of(model, include_buffers=True, frozen=_frozen(model))  # each checkpoint's own frozen layers:
    # left out, a checkpoint's true loss was that of its weights with the model's frozen ones (trial s35)
    dtype = vector_dtype(model)  # a float64 model's checkpoints to float64 rounding, not float32's ~1e-7
    base = flatten(model, layout).to(dtype).cpu()
    rows = []
    for k, sd in enumerate(states):
        missing = [e.name for e in layout.entries if e.name not in sd]
        if missing:
            raise LandscapeError(f"checkpoint {k} has no tensor {missing[0]!r}; expected a state dict of this model")
        rows.append(torch.cat([torch.as_tensor(sd[e.name]).detach().to(dtype).cpu().reshape(-1)
                               for e in layout.entries]) - base)
    ev = Evaluator(model, data, torch.stack(rows), layout, loss_fn=loss_fn, metrics=None, settings=settings,
                   bn_data=bn_data)
    return ev.evaluate(np.eye(len(states)))[:, 0], ev.bn_fingerprint, ev.data_fingerprint


__all__ = ["pca_directions", "project_trajectory", "ProjectedPath", "checkpoint_losses", "as_checkpoints"]
