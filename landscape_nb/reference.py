"""Read and write the HDF5 files of the reference implementation (tomgoldstein/loss-landscape).

Its *direction files* hold a group ``xdirection`` (and ``ydirection`` for a plane) with one
dataset per tensor, named ``"0"``, ``"1"``, ...: the tensors of ``model.parameters()``
(``--dir_type weights``) or of ``model.state_dict()`` (``--dir_type states``, BatchNorm
running statistics included), in that order. Its *surface files* hold ``xcoordinates``
(``ycoordinates``), and ``train_loss``/``train_acc`` (``test_loss``/``test_acc``) arrays
whose shape says ``(nx, ny)`` while their values are filled in ``np.meshgrid(x, y)`` order
(the flat index ``j * nx + i`` is the point ``(x[i], y[j])``), with ``-1`` where a point is
not computed yet and accuracy in percent.

>>> d = load_reference_directions(model, "model_300.t7_weights_xignore=biasbn_xnorm=filter.h5")
>>> surf = load_reference_surface("model_300.t7_..._[-1.0,1.0,51]x[-1.0,1.0,51].h5")
>>> save_reference_surface(surf, "ours.h5")      # plot_2D.py / h52vtp.py read it

h5py is imported on first use (``pip install landscape_nb[h5]``).

References
----------
Li, Xu, Taylor, Studer, Goldstein, "Visualizing the Loss Landscape of Neural Nets",
NeurIPS 2018; code: https://github.com/tomgoldstein/loss-landscape
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LandscapeError, warn_user
from .surface import Surface

DIR_TYPES = ("weights", "states")
SPLITS = ("train", "test")
_AXES = ("xdirection", "ydirection")
_ATTR_PROVENANCE = "landscape_nb_provenance"
_ATTR_VALUES = "landscape_nb_values_sha256"
_ATTR_SPEC = "landscape_nb_spec"
_NOT_COMPUTED = -1.0


def _h5py():
    try:
        import h5py
    except ImportError:
        raise LandscapeError(
            "reading or writing the reference's .h5 files needs h5py, which is not installed; "
            "install it with `pip install landscape_nb[h5]`"
        ) from None
    return h5py


def _open(path, mode: str):
    h5py = _h5py()
    path = Path(path)
    if mode == "w":
        path.parent.mkdir(parents=True, exist_ok=True)
    try:  # read without HDF5's file lock: a file the reference is still filling in (it holds it open, r+)
        return h5py.File(path, mode, locking=False) if mode == "r" else h5py.File(path, mode)  # plots as partial
    except OSError as exc:
        verb = "read" if mode == "r" else "write"
        if mode == "r" and "locking flag" in str(exc):  # this process has it open (an h5py.File of the user's):
            try:  # HDF5 shares that handle only when opened with the same locking flag
                return h5py.File(path, mode)
            except OSError as again:
                exc = again
        if "already open" in str(exc):  # this process's own handle: HDF5 refuses the write, not another's lock
            raise LandscapeError(
                f"cannot {verb} {str(path)!r}: this Python process holds it open "
                f"({exc}); expected a file not open here: close your h5py.File on it (or leave its `with` block) "
                "first, or write another path"
            ) from None
        if "lock" in str(exc):
            raise LandscapeError(
                f"cannot {verb} {str(path)!r}: another process holds it open ({exc}); "
                "expected a file no one else has open: wait for that run (the reference's plot_surface.py) "
                "to end, or write another path"
            ) from None
        if mode != "r":  # a folder that cannot be written, a full disk: not a file of another format (trial s37)
            raise LandscapeError(f"cannot write {str(path)!r} ({exc}); expected a path where a new file can be "
                                 "written: choose another folder or file name") from None
        raise LandscapeError(
            f"cannot open {str(path)!r} as HDF5 ({exc}); expected a .h5 file written by the reference "
            "implementation (plot_surface.py) or by landscape_nb.reference"
        ) from None


def _dumps(obj) -> str:
    return json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))


def _attr_json(obj, name: str) -> dict:
    raw = obj.attrs.get(name)
    if raw is None:
        return {}
    try:
        value = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# ------------------------------------------------------------ directions ----

def _reference_entries(model, dir_type: str) -> list[tuple[str, Any]]:
    """(name, tensor) in the order the reference lists a direction's tensors."""
    if dir_type == "weights":
        return list(model.named_parameters())  # what net.parameters() yields
    return list(model.state_dict(keep_vars=True).items())


def _read_axis(f, axis: str, entries: list[tuple[str, Any]]) -> list[np.ndarray]:
    """The tensors of one direction; a flat 1-D dataset is split into the entries' shapes."""
    obj = f[axis]
    if isinstance(obj, _h5py().Group):
        names = set(obj.keys())
        if names != {str(i) for i in range(len(names))}:
            odd = sorted(names - {str(i) for i in range(len(names))}, key=lambda n: (not n.isdigit(), n))
            raise LandscapeError(  # it listed '0'..'4' for a stray 'meta' among them (trial s38)
                f"{axis!r} holds {len(names)} datasets, of which {odd[:5]} are not named '0'..'{len(names) - 1}'; "
                "expected datasets named '0', '1', ... (one per model tensor), as the reference's "
                "h5_util.write_list writes them: remove the others from the group"
            )
        return [np.asarray(obj[str(i)][()]) for i in range(len(names))]
    flat = np.asarray(obj[()]).reshape(-1)  # one flat vector: the tensors concatenated in order
    sizes = [int(np.prod(t.shape)) for _, t in entries]
    if flat.size != sum(sizes):
        return [flat]
    parts = np.split(flat, np.cumsum(sizes)[:-1])
    return [p.reshape(tuple(t.shape)) for p, (_, t) in zip(parts, entries)]


def _fits(arrays: list[np.ndarray], entries: list[tuple[str, Any]]) -> str | None:
    """None if the arrays match the entries one to one in shape, else what differs."""
    if len(arrays) != len(entries):
        return f"{len(arrays)} tensors in the file, {len(entries)} in the model"
    for k, (a, (name, t)) in enumerate(zip(arrays, entries)):
        if tuple(a.shape) != tuple(t.shape):
            return f"tensor {k} ({name!r}) has shape {tuple(a.shape)} in the file, {tuple(t.shape)} in the model"
    return None


def load_reference_directions(model, path, *, dir_type: str | None = None):
    """Directions from a direction file of the reference implementation, for ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        The model the directions were made for (same architecture, same tensor order).
    path : str or os.PathLike
        An ``.h5`` file with an ``xdirection`` (and, for a plane, ``ydirection``) group of
        datasets ``"0"``, ``"1"``, ..., one per tensor, as ``net_plotter.setup_direction``
        writes it; a flat 1-D dataset of all tensors concatenated is accepted too.
    dir_type : {"weights", "states"} or None
        ``"weights"``: one tensor per ``model.parameters()``; ``"states"``: one per
        ``model.state_dict()`` entry (BatchNorm running statistics move too). ``None``
        (default) infers it from the number and shapes of the tensors.

    Returns
    -------
    Directions
        ``n = 1`` (``xdirection`` only) or ``2``, over the trainable parameters (and the
        floating-point buffers for ``"states"``), float32 (float64 for a float64 model).
        ``provenance`` has ``scheme="reference"`` (or, for a file ``save_reference_directions``
        wrote whose values are unchanged, the scheme, seed and norm it stored), ``dir_type``,
        ``path`` and ``dropped``, the reference tensors left out: integer buffers such as ``num_batches_tracked`` (they
        change nothing in eval mode) and frozen parameters whose direction is zero. The
        entries of a tied tensor's aliases in a ``state_dict`` add up, as the reference's
        ``set_states`` adds each entry in place to a deep copy that keeps them one tensor;
        where more than one is non-zero that warns (``UserWarning``: equal entries move it
        twice their step), and ``tied_summed`` lists the names, one list per tensor. A
        ``"states"`` file of PyTorch 0.4.0, whose ``state_dict`` had no BatchNorm
        ``num_batches_tracked``, is read without them (``without_num_batches_tracked``).

    Raises
    ------
    LandscapeError
        No ``xdirection``; tensors that do not match the model in number or shape (both
        shapes named); a non-zero direction on a frozen parameter (``requires_grad=False``),
        which landscape_nb directions never move.
    """
    import torch

    from .directions import Directions, _cosines, _max_offdiag
    from .params import ParamLayout

    if dir_type is not None and dir_type not in DIR_TYPES:
        raise LandscapeError(f"dir_type={dir_type!r}; expected 'weights', 'states' or None (infer from the file)")
    ParamLayout.of(model)  # refuses what is not an nn.Module, or has nothing to move
    with _open(path, "r") as f:
        axes = [a for a in _AXES if a in f]
        if "xdirection" not in axes:
            raise LandscapeError(
                f"{str(path)!r} has no 'xdirection' (it holds {sorted(f.keys())}); expected a direction file "
                "of the reference implementation (net_plotter.setup_direction), not a surface file"
            )
        extra = sorted(k for k in f if k.endswith("direction") and k not in _AXES)
        if extra:  # a third axis would be dropped without a word, or a 3D grid told the file holds two
            raise LandscapeError(
                f"{str(path)!r} holds {extra} besides {axes}; the reference's direction files hold xdirection and "
                "ydirection only, and a third is not read here: save a volume's directions with Directions.save "
                "(.npz), or remove the extra group for a plane")
        candidates = [dir_type] if dir_type else list(DIR_TYPES)
        problems, chosen, counters = {}, None, []
        for kind in candidates:
            entries = _reference_entries(model, kind)
            arrays = [_read_axis(f, a, entries) for a in axes]
            problem = next((p for p in (_fits(arr, entries) for arr in arrays) if p), None)
            old = [(n, t) for n, t in entries if not n.endswith("num_batches_tracked")]
            if problem is not None and kind == "states" and len(old) < len(entries):
                # PyTorch 0.4.0's state_dict had no BatchNorm num_batches_tracked (the reference's README names
                # 0.4): its states files were refused as another model's (trial s59)
                old_arrays = [_read_axis(f, a, old) for a in axes]
                if all(_fits(arr, old) is None for arr in old_arrays):
                    counters = [n for n, _ in entries if n.endswith("num_batches_tracked")]
                    entries, arrays, problem = old, old_arrays, None
            if problem is None:
                chosen = kind
                break
            problems[kind] = problem
        if chosen is None:
            detail = "; ".join(f"as {k!r}: {p}" for k, p in problems.items())
            other = [k for k in DIR_TYPES if k != dir_type]
            fits_other = bool(dir_type) and all(  # --dir-type weights on a states file said only the counts (s38)
                _fits(_read_axis(f, a, _reference_entries(model, other[0])), _reference_entries(model, other[0]))
                is None for a in axes)
            raise LandscapeError(
                f"the directions in {str(path)!r} do not fit {type(model).__name__} ({detail}); expected one "
                "tensor per model.parameters() ('weights') or per model.state_dict() entry ('states'), same "
                "shapes, same order. "
                + (f"The file fits as {other[0]!r}: drop dir_type (--dir-type), which the file decides, or pass "
                   f"{other[0]!r}." if fits_other else
                   "Load them with the model (architecture and definition) they were made for.")
            )
        stored = _attr_json(f, _ATTR_PROVENANCE)
        written = f.attrs.get(_ATTR_VALUES)  # none in the reference's files and in ours before 2026-12-02
        if written is not None and written != _values_digest(arrays):
            stored = {}  # the values were edited since landscape_nb wrote them: its description does not hold

    layout = ParamLayout.of(model, include_buffers=chosen == "states")
    # float64 for a float64 model (a float64 file's values kept; float32 rounding showed as 3e-5 near a running_var
    # reaching 0), else float32, as every Directions of a float32 model
    wide = any(t.dtype == torch.float64 for t in layout.tensors(model))
    dtype = np.float64 if wide else np.float32
    position = {e.name: k for k, e in enumerate(layout.entries)}
    by_id = {id(t): e.name for e, t in zip(layout.entries, layout.tensors(model))}
    rows, dropped, summed = [], [], {}
    for axis, arr in zip(axes, arrays):
        parts: list[torch.Tensor | None] = [None] * len(layout.entries)
        moving: dict[int, list[tuple[str, torch.Tensor]]] = {}  # the names whose entries move each tensor
        for (name, tensor), values in zip(entries, arr):
            target = name if name in position else by_id.get(id(tensor))
            if target is not None:
                step = torch.from_numpy(np.asarray(values, dtype=dtype).copy())
                k = position[target]  # a tied alias adds to the tensor it shares, as the reference's set_states
                parts[k] = step if parts[k] is None else parts[k] + step  # adds each entry in place to a deepcopy
                if torch.any(step != 0):                                  # that keeps the aliases one tensor
                    moving.setdefault(k, []).append((name, step))
                continue
            if name not in dropped:
                dropped.append(name)
            frozen = isinstance(tensor, torch.nn.Parameter) and not tensor.requires_grad
            if frozen and np.any(np.asarray(values) != 0):
                raise LandscapeError(
                    f"the {axis} in {str(path)!r} moves {name!r}, which is frozen (requires_grad=False) in the "
                    "model; landscape_nb directions cover trainable parameters only. Set "
                    f"model.get_parameter({name!r}).requires_grad_(True) before loading to include it."
                )
        for k, named in moving.items():
            if len(named) > 1:
                same = all(torch.equal(named[0][1], step) for _, step in named[1:])
                summed.setdefault(tuple(n for n, _ in named), set()).add(same)
        for k, e in enumerate(layout.entries):  # non-persistent buffers: not in a state_dict
            if parts[k] is None:
                parts[k] = torch.zeros(e.shape, dtype=torch.float64 if wide else torch.float32)
        rows.append(torch.cat([p.reshape(-1) for p in parts]))
    vectors = torch.stack(rows)
    if len(rows) == 2 and torch.equal(rows[0], rows[1]):  # the reference's --same_dir: refused later as parallel
        warn_user(f"landscape_nb.load_reference_directions: {str(path)!r} holds the same ydirection as xdirection "
                  "(plot_surface.py --same_dir), so they span a line, not a plane: a 2D surface along them is "
                  "refused; use .select([0]) for the line, or write a file with two directions")  # (its refusal
    if summed:  # trial s54: a hand-written file moved a tied tensor twice, not a word said
        names = "; ".join(" and ".join(repr(n) for n in group)
                          + (" (the same values: twice their step)" if any(same) else "")
                          for group, same in summed.items())
        warn_user(f"landscape_nb.load_reference_directions: {str(path)!r} moves one tied tensor under several "
                  f"names of the state_dict: {names}. It moves by the sum of their entries, as the reference's "
                  "set_states adds each entry in place to the one tensor. Where the file meant one move, write "
                  "zeros under all but one of its names (as save_reference_directions does), or pass the "
                  "directions to as_directions, which refuses different values under one tensor's names")
    prov = dict(stored)
    prov.update({"scheme": stored.get("scheme", "reference"), "dir_type": chosen, "path": str(path),
                 "dropped": dropped + counters, **({"without_num_batches_tracked": True} if counters else {}),
                 "tied_summed": [list(group) for group in summed],
                 "cosine_max": _max_offdiag(_cosines(vectors)),
                 "norms": vectors.double().norm(dim=1).tolist()})
    return Directions(vectors, layout, prov)


def save_reference_directions(model, directions, path, *, dir_type: str | None = None) -> Path:
    """Write ``directions`` as a direction file of the reference implementation.

    Parameters
    ----------
    model : torch.nn.Module
        The model the directions belong to; it gives the reference's tensor list.
    directions : Directions or anything ``as_directions`` accepts
        One or two directions.
    path : str or os.PathLike
        The ``.h5`` file to write (replaced if it exists).
    dir_type : {"weights", "states"} or None
        Default: ``"states"`` when the directions move buffers, else ``"weights"``.
        Tensors the directions leave out (frozen parameters, integer buffers) are written
        as zeros; so are a tied tensor's other names (the reference adds every entry to the one
        tensor).

    Returns
    -------
    pathlib.Path
        ``path``; pass it to ``plot_surface.py --dir_file`` with the same ``--dir_type``.

    Raises
    ------
    LandscapeError
        More than two directions; ``dir_type="weights"`` for directions that move buffers.
    """
    from .directions import _jsonable, as_directions

    directions = as_directions(model, directions)
    if directions.n > 2:
        raise LandscapeError(
            f"{directions.n} directions; the reference's files hold one (xdirection) or two (xdirection, "
            "ydirection): pass directions.select([0, 1])"
        )
    layout = directions.layout
    if dir_type is None:
        dir_type = "states" if layout.include_buffers else "weights"
    if dir_type not in DIR_TYPES:
        raise LandscapeError(f"dir_type={dir_type!r}; expected 'weights', 'states' or None")
    named = directions.as_state_dicts()
    if dir_type == "weights":
        moved = [e.name for e in layout.entries if e.kind == "buffer" and any(bool(d[e.name].any()) for d in named)]
        if moved:
            raise LandscapeError(
                f"the directions move buffers {moved[:3]}, which a 'weights' direction file cannot hold; "
                "write them with dir_type='states'"
            )
    entries = _reference_entries(model, dir_type)
    written: list[list[np.ndarray]] = []  # each axis's datasets, as load_reference_directions reads them back
    with _open(path, "w") as f:
        for axis, d in zip(_AXES, named):
            group = f.create_group(axis)
            written.append([])
            for k, (name, tensor) in enumerate(entries):
                # an alias of a tied tensor gets zeros: the reference adds every entry to the one shared tensor
                values = d[name].numpy() if name in d else np.zeros(tuple(tensor.shape), dtype=np.float32)
                group.create_dataset(str(k), data=values)
                written[-1].append(values)
        f.attrs["dir_type"] = dir_type
        f.attrs[_ATTR_PROVENANCE] = _dumps(_jsonable(directions.provenance))
        f.attrs[_ATTR_VALUES] = _values_digest(written)
    return Path(path)


def _values_digest(arrays) -> str:
    """SHA-256 of a direction file's values as read (axis by axis, tensor by tensor): the stored
    provenance describes them only while it matches."""
    from .spec import hash_array

    h = hashlib.sha256()
    for arr in arrays:
        for values in arr:
            hash_array(h, values)
    return h.hexdigest()


# -------------------------------------------------------------- surfaces ----

def _grid_array(f, key: str, nx: int, ny: int | None, path) -> np.ndarray:
    """A reference array as ours: (ny, nx) with ``a[j, i]`` at ``(x[i], y[j])``, or (nx,)."""
    arr = np.asarray(f[key][()], dtype=float)
    if ny is None:
        if arr.shape != (nx,):
            raise LandscapeError(
                f"{key!r} in {str(path)!r} has shape {arr.shape}, but there are {nx} xcoordinates and no "
                f"ycoordinates, so the expected shape is ({nx},); the file is inconsistent: recompute it, "
                "or fix xcoordinates to the values the array was computed at"
            )
        return arr
    if arr.shape not in ((nx, ny), (ny, nx)):
        raise LandscapeError(
            f"{key!r} in {str(path)!r} has shape {arr.shape}, but {nx} xcoordinates and {ny} ycoordinates "
            f"give the reference's shape ({nx}, {ny}); the file is inconsistent: recompute it, or fix "
            "xcoordinates/ycoordinates to the values the array was computed at"
        )
    return arr.reshape(-1).reshape(ny, nx)  # meshgrid order whatever the stated shape


def load_reference_surface(path, *, split: str | None = None) -> Surface:
    """A ``Surface`` from a surface file of the reference implementation.

    Parameters
    ----------
    path : str or os.PathLike
        An ``.h5`` file with ``xcoordinates`` (shape (nx,)), optionally ``ycoordinates``
        ((ny,)), and ``{split}_loss`` / ``{split}_acc`` arrays of shape (nx, ny) (or (nx,))
        filled in ``np.meshgrid(x, y)`` order, as ``plot_surface.py`` writes them.
    split : {"train", "test"} or None
        Which loss becomes ``Surface.loss``. Default: ``"train"`` if the file has
        ``train_loss`` with a point computed, else ``"test"``.

    Returns
    -------
    Surface
        ``loss[j, i]`` at ``(x[i], y[j])``, shape (ny, nx) (or (nx,)); ``metrics["accuracy"]``
        from ``{split}_acc`` as a fraction (the file holds percent); the other split as
        ``metrics["test_loss"]``/``["test_accuracy"]`` (or ``train_``), NaN where its own loss is
        still ``-1``; ``max_eig``/``min_eig`` as ``lambda_max``/``lambda_min`` (and ``eig_ratio``
        = |λ_min/λ_max| where the file has none); another split's ``<name>_acc`` beside its
        ``<name>_loss`` (``save_reference_surface`` of named splits) as ``<name>_accuracy``, a
        fraction; any other array of the grid's size as a metric of that name. Points the
        file marks as not computed (negative, ``-1``) are NaN with ``done`` False, and so are
        a split's metrics where its loss is NaN.

    Raises
    ------
    LandscapeError
        No ``xcoordinates`` or loss; an array whose shape does not fit the coordinates (both
        shapes named).
    """
    if split is not None and split not in SPLITS:
        raise LandscapeError(f"split={split!r}; expected 'train', 'test' or None (the file's first)")
    with _open(path, "r") as f:
        keys = set(f.keys())
        if "xcoordinates" not in keys:
            raise LandscapeError(
                f"{str(path)!r} has no 'xcoordinates' (it holds {sorted(keys)}); expected a surface file of the "
                "reference implementation (plot_surface.py), not a direction file"
            )
        if split is None:  # the first the file has, passing over one not computed anywhere (an empty figure
            has = [s for s in SPLITS if f"{s}_loss" in keys]  # for a file whose test run alone finished, s35)
            computed = [s for s in has if (np.asarray(f[f"{s}_loss"][()], float) >= 0).any()]
            split = (computed or has or [None])[0]
        if split is None or f"{split}_loss" not in keys:
            has = [s for s in SPLITS if f"{s}_loss" in keys]
            raise LandscapeError(
                f"{str(path)!r} has no {(split or 'train') + '_loss'!r} (it holds {sorted(keys)}); expected "
                "'train_loss' or 'test_loss': " + (
                    f"pass split={has[0]!r}, the one it has" if has else
                    "it holds Hessian eigenvalues only, as plot_hessian_eigen.py writes them into a surface file "
                    "before plot_surface.py has added its loss: run that on the same --surf_file first, or "
                    "compute the eigen-map here (lnb.eigen_map)" if {"max_eig", "min_eig"} & keys else
                    f"it holds {sorted(k for k in keys if k.endswith('_acc'))} but no loss, which the surface is "
                    "of: write the loss beside it (the reference's plot_surface.py writes both)"
                    if any(k.endswith("_acc") for k in keys) else
                    # what plot_surface.py leaves when it is stopped before its first values (trial s59)
                    "it holds the coordinates alone, as the reference's plot_surface.py leaves a surface file it "
                    "was stopped in before writing any loss: nothing was computed into it, so run plot_surface.py "
                    "on it again (it resumes there), or compute the surface here (landscape-nb compute)"
                    if keys <= {"xcoordinates", "ycoordinates", "dir_file"} else
                    "it holds neither, so it is no surface file of the reference")
            )
        x = np.asarray(f["xcoordinates"][()], dtype=float).reshape(-1)
        y = np.asarray(f["ycoordinates"][()], dtype=float).reshape(-1) if "ycoordinates" in keys else None
        ny = None if y is None else y.size
        loss = _grid_array(f, f"{split}_loss", x.size, ny, path)
        done = ~(loss < 0)  # the reference fills -1 where not computed; NaN is a diverged point
        metrics: dict[str, np.ndarray] = {}
        other = "test" if split == "train" else "train"
        names = {f"{split}_acc": "accuracy", f"{other}_loss": f"{other}_loss", f"{other}_acc": f"{other}_accuracy",
                 **_EIGEN_KEYS}
        # a named split's accuracy, in percent as save_reference_surface writes it: val_acc read as 28.2 (trial s38)
        split_accs = {k for k in keys if k.endswith("_acc") and f"{k[:-4]}_loss" in keys} - {f"{split}_acc"}
        names.update({k: f"{k[:-4]}_accuracy" for k in split_accs})
        h5py = _h5py()
        for key in sorted(keys - {"xcoordinates", "ycoordinates", f"{split}_loss"}):
            obj = f[key]
            is_grid = isinstance(obj, h5py.Dataset) and obj.dtype.kind in "fiu" and obj.size == loss.size
            if not (is_grid and obj.shape in (((x.size,),) if ny is None else ((x.size, ny), (ny, x.size)))):
                if key in names:  # a known key with the wrong shape: say so
                    _grid_array(f, key, x.size, ny, path)
                continue
            values = _grid_array(f, key, x.size, ny, path)
            if key in (f"{split}_acc", f"{other}_acc") or key in split_accs:
                _warn_if_fractions(values, key, path, ours=_ATTR_PROVENANCE in f.attrs)
                # the reference's -1 "not computed" also where a point's loss is in (trial s54: read as -0.01)
                values = np.where(values < 0, np.nan, values / 100.0)
            metrics[names.get(key, key)] = values
        pending = _not_computed_as_nan(metrics, loss, done, other)
        dir_file = f["dir_file"][()] if "dir_file" in keys else None
        stored_prov = _attr_json(f, _ATTR_PROVENANCE)
        spec = _attr_json(f, _ATTR_SPEC)
    if isinstance(dir_file, bytes):
        dir_file = dir_file.decode()
    prov = dict(stored_prov)
    prov.update({"source": "reference-h5", "path": str(path), "split": split})
    if pending is not None:  # written back as -1 (save_reference_surface), for the reference to fill in (NaN there
        prov[_PENDING] = {"split": other, "shape": list(pending.shape),  # reads as computed); its other values as read
                          "bits": np.packbits(pending.reshape(-1)).tobytes().hex()}
    if dir_file is not None:
        prov["dir_file"] = str(dir_file)
    return Surface(x=x, y=y, loss=np.where(done, loss, np.nan), metrics=metrics, done=done, spec=spec,
                   provenance=prov)


def _warn_if_fractions(values: np.ndarray, key: str, path, ours: bool) -> None:
    """Warn where a reference file's accuracy, in percent there, is at most 1 % at every computed point but not
    0: a file written with fractions (read as 0.0093 for 93 %, with no word: trial s35)."""
    computed = values[np.isfinite(values) & (values >= 0)]
    if not ours and computed.size and computed.max() <= 1.0 and computed.max() > 0:
        warn_user(f"landscape_nb: {key!r} in {str(path)!r} is at most {computed.max():.4g} at every computed point; the reference "
                  "writes accuracy in percent, so it reads as at most 1 %: if the file holds fractions, multiply "
                  "them by 100 in the file (or read metrics[...] * 100)")


#: the reference's Hessian keys (plot_hessian_eigen.py) as an eigen-map's metrics (`landscape_nb.eigen_map`)
_EIGEN_KEYS = {"max_eig": "lambda_max", "min_eig": "lambda_min"}
_EIGEN_WRITTEN = {ours: key for key, ours in _EIGEN_KEYS.items()}  # and back, as plot_2d_eig_ratio reads them
#: a loaded file's provenance key for where its other split's loss is -1 (not computed): {"split", "shape", "bits"
#: (np.packbits of the mask, hex)}; save_reference_surface writes -1 there again and that split's values elsewhere
_PENDING = "reference_other_split_not_computed"


def _pending_mask(surface: Surface, split: str) -> np.ndarray | None:
    """The mask `_PENDING` records for the other split of ``split``, in the surface's layout; None if none (a
    surface not loaded from a reference file, or of another grid)."""
    kept = surface.provenance.get(_PENDING)
    other = "test" if split == "train" else "train"
    if not isinstance(kept, dict) or kept.get("split") != other or list(np.shape(surface.loss)) != kept.get("shape"):
        return None
    n = int(np.prod(kept["shape"]))
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(kept["bits"]), dtype=np.uint8))[:n]
    return bits.astype(bool).reshape(kept["shape"]) if bits.size == n else None


def _not_computed_as_nan(metrics: dict[str, np.ndarray], loss: np.ndarray, done: np.ndarray,
                         other: str) -> np.ndarray | None:
    """NaN, in a loaded file's ``metrics``, where the reference had not computed them or the loss diverged:
    the points ``done`` leaves out; the other split's loss and accuracy where its own loss is still -1 (its
    run is a separate one: its -1 read as a loss of -1 and an accuracy of -0.01, trial s35) or NaN; λ_max and λ_min
    where plot_hessian_eigen.py left its placeholders (-1 and +1: λ_min above λ_max); and every metric of a
    split whose loss is NaN there (the accuracy of NaN logits read as a plausible 0.45). Where both
    eigenvalues are known and the file has no ratio, ``eig_ratio`` is |λ_min / λ_max|, as the reference's
    plot_2d_eig_ratio draws it. Returns where the other split's loss was -1 (None without it): NaN in
    ``metrics``, kept in the provenance (`_PENDING`) to be written as -1 again."""
    mine = done & ~np.isnan(loss)
    theirs = {f"{other}_loss", f"{other}_accuracy"}
    pending = None
    if f"{other}_loss" in metrics:
        other_loss = metrics[f"{other}_loss"]
        pending = other_loss < 0  # returned: the points its run is yet to compute
        reached = ~pending  # its own loss decides, not this split's -1 or NaN: its values kept where this split
        metrics[f"{other}_loss"] = np.where(reached, other_loss, np.nan)
        if f"{other}_accuracy" in metrics:
            metrics[f"{other}_accuracy"] = np.where(reached & ~np.isnan(other_loss), metrics[f"{other}_accuracy"],
                                                    np.nan)
    if "lambda_max" in metrics:
        lmax, lmin = metrics["lambda_max"], metrics.get("lambda_min")
        placeholder = lmax == -1.0 if lmin is None else lmin > lmax
        for name in ("lambda_max", "lambda_min"):
            if name in metrics:
                metrics[name] = np.where(placeholder, np.nan, metrics[name])
        if lmin is not None and "eig_ratio" not in metrics:
            with np.errstate(divide="ignore", invalid="ignore"):  # NaN where λ_max is 0 (was inf), as eig_ratio
                ratio = np.abs(metrics["lambda_min"] / metrics["lambda_max"])
            metrics["eig_ratio"] = np.where(np.isfinite(ratio), ratio, np.nan)
    for name, values in metrics.items():
        if name not in theirs:
            metrics[name] = np.where(mine, values, np.nan)
    return pending


def named_splits(surface: Surface) -> list[str] | None:
    """The split names of a surface computed over named splits (``data={"train": ..., "test": ...}``), in
    its order: its loss is the first split's, whose ``"<split>_loss"`` metric holds it too. None for a
    surface of one data set."""
    first = next(iter(surface.metrics), "")
    if not first.endswith("_loss"):
        return None
    if not np.array_equal(np.asarray(surface.loss, float), np.asarray(surface.metrics[first], float), equal_nan=True):
        return None
    return [m[:-len("_loss")] for m in surface.metrics if m.endswith("_loss")]


def save_reference_surface(surface: Surface, path, *, split: str | None = None, dir_file: str | None = None) -> Path:
    """Write ``surface`` in the reference's surface-file layout.

    Parameters
    ----------
    surface : Surface
        1D or 2D; its ``loss`` goes to ``{split}_loss``, ``metrics["accuracy"]`` to
        ``{split}_acc`` in percent, ``metrics["test_loss"]``/``["test_accuracy"]`` (for
        ``split="train"``) to ``test_loss``/``test_acc``, and any other metric under its
        own name. A surface over named splits (``data={"train": ..., "test": ...}``, whose
        loss is also its first split's ``<split>_loss`` metric) writes each split under its
        own name (``train_loss``, ``train_acc``, ``val_loss``, ...); ``split`` must then be
        one of them. ``spec`` and ``provenance`` travel as JSON attributes, which the
        reference ignores.
    path : str or os.PathLike
        The ``.h5`` file to write (replaced if it exists).
    split : {"train", "test"}, optional
        Which of the reference's names the loss gets. Default: for a surface read by
        `load_reference_surface`, the split it was read as (a file whose test split only is
        computed reads as test, and was written back as train, review s57); else ``"train"``.
    dir_file : str, optional
        Stored as ``dir_file`` (the reference records its direction file there); default
        ``surface.provenance["dir_file"]`` if set, else the direction file the surface was computed
        along (`load_reference_directions`), if any.

    Returns
    -------
    pathlib.Path
        ``path``. Arrays have the reference's shape (nx, ny) and are filled in
        ``np.meshgrid(x, y)`` order, with ``-1`` at points not computed, so
        ``plot_surface.py --surf_file`` resumes it and ``plot_2D.py``/``h52vtp.py`` read it
        (those two plot square grids only, for the reference's own files as for ours).

    Raises
    ------
    LandscapeError
        An unknown split, or one a surface over named splits lacks; a 3D volume; a metric named
        like a coordinate or a reserved key; a computed loss below 0, which the layout would
        read as "not computed".
    """
    from .directions import _jsonable

    if not isinstance(surface, Surface):
        raise LandscapeError(f"expected a Surface, got {type(surface).__name__}; pass the result of compute_surface")
    if split is None:
        read = surface.provenance.get("split") if surface.provenance.get("source") == "reference-h5" else None
        split = read if read in SPLITS else "train"
    if split not in SPLITS:
        raise LandscapeError(f"split={split!r}; expected 'train' or 'test'")
    if surface.ndim == 3:
        raise LandscapeError(f"a 3D volume of shape {np.shape(surface.loss)} was given; the reference's surface files "
                             "hold a line or a plane: save a plane of it (surface.slice('z', value=0.0)), or the "
                             "volume with lnb.export_vtk")
    other = "test" if split == "train" else "train"
    x = np.asarray(surface.x, dtype=float)
    y = None if surface.y is None else np.asarray(surface.y, dtype=float)
    expected = (x.size,) if y is None else (y.size, x.size)
    done = np.asarray(surface.done_mask, dtype=bool)
    if "loss" in surface.metrics:
        raise LandscapeError("the surface has a metric named 'loss' beside its loss; rename the metric")
    arrays = {"loss": surface.loss, **dict(surface.metrics)}
    pending = _pending_mask(surface, split)
    for name, arr in arrays.items():
        if np.shape(arr) != expected:
            raise LandscapeError(
                f"surface {name!r} has shape {np.shape(arr)}; expected {expected} for {x.size} x values"
                + ("" if y is None else f" and {y.size} y values (rows = y)") + "; build the Surface with matching arrays"
            )
    loss = np.asarray(surface.loss, dtype=float)
    if np.any(done & (loss < 0)):
        raise LandscapeError(
            f"the surface has computed losses below 0 (min {np.nanmin(loss[done]):.4g}); the reference layout "
            "marks points not computed with -1 and reads every negative value so: shift the loss to be "
            "non-negative, or keep it in landscape_nb's own store"
        )
    zeros = int(np.sum(done & (loss == 0)))
    if zeros:  # the reference's scheduler takes vals <= 0 as to be computed (trial s57: written as they were)
        warn_user(f"landscape_nb: save_reference_surface: {zeros} computed point(s) have a loss of exactly 0, which "
                  "the reference's plot_surface.py (its scheduler: values <= 0) reads as not computed and would "
                  "compute again if it resumes the file; landscape_nb reads them back as computed")
    names = {"loss": f"{split}_loss", "accuracy": f"{split}_acc",
             f"{other}_loss": f"{other}_loss", f"{other}_accuracy": f"{other}_acc",
             **_EIGEN_WRITTEN}
    splits = named_splits(surface)
    if splits:  # every split goes under its own name, the accuracy as <split>_acc
        if split not in splits:
            raise LandscapeError(
                f"split={split!r}, but the surface is over the named splits {splits}, so the file would hold no "
                f"{split}_loss (which load_reference_surface and the reference's plot scripts read); expected one "
                f"of {splits}: pass split={splits[-1]!r} (plot_2D.py --surf_name {splits[-1]}_loss), or name a "
                "split 'train' in the data")
        del arrays["loss"]
        names = {**{f"{s}_{q}": f"{s}_{'acc' if q == 'accuracy' else 'loss'}"
                    for s in splits for q in ("loss", "accuracy")}, **_EIGEN_WRITTEN}
    reserved = {"xcoordinates", "ycoordinates", "dir_file", *(f"{s}_{q}" for s in SPLITS for q in ("loss", "acc")),
                *_EIGEN_KEYS}
    out: dict[str, np.ndarray] = {}
    for name, arr in arrays.items():
        key = names.get(name, name)
        if key in out or (name not in names and key in reserved):
            theirs = (f" (the surface's loss is the {other} split's, its {split} split this metric: pass "
                      f"split={other!r})" if name in (f"{split}_loss", f"{split}_accuracy") else "")
            raise LandscapeError(
                f"surface metric {name!r} would be written as the reference's key {key!r}, which "
                f"{'the loss or another metric' if key in out else 'the layout reserves'} takes{theirs}; "
                "rename the metric" + (" or pass that split" if theirs else "")
            )
        values = np.asarray(arr, dtype=float) * (100.0 if name in names and key.endswith("_acc") else 1.0)
        if pending is not None and name in (f"{other}_loss", f"{other}_accuracy"):  # a loaded reference file's
            values = np.where(pending & np.isnan(values), _NOT_COMPUTED, values)  # other split: -1 where yet to be
            # computed, not NaN, as read where this split is not (s56); a value filled in there since is written
        else:
            values = np.where(done, values, _NOT_COMPUTED)
        out[key] = values if y is None else values.reshape(-1).reshape(x.size, y.size)  # shape (nx, ny), meshgrid order
    if dir_file is None:  # as recorded, or the direction file it was computed along (trial s35: not written)
        made = surface.provenance.get("directions") or {}
        dir_file = surface.provenance.get("dir_file") or (made.get("path") if made.get("dir_type") else None)
    with _open(path, "w") as f:
        if dir_file is not None:
            f["dir_file"] = str(dir_file)
        f["xcoordinates"] = x
        if y is not None:
            f["ycoordinates"] = y
        for key, values in out.items():
            f[key] = values
        f.attrs[_ATTR_PROVENANCE] = _dumps(_jsonable(surface.provenance))
        f.attrs[_ATTR_SPEC] = _dumps(_jsonable(surface.spec))
    return Path(path)


__all__ = ["load_reference_directions", "save_reference_directions", "load_reference_surface",
           "save_reference_surface", "DIR_TYPES"]
