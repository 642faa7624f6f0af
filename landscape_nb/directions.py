"""Directions in weight space: random (filter-normalized), user-supplied (between models: ``model_paths``).

Filter normalization is from Li et al., "Visualizing the Loss Landscape of Neural
Nets" (NeurIPS 2018): each filter of a random Gaussian direction is rescaled to
the norm of the matching filter of the weights, which removes the scale
invariance that makes raw random directions misleading.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .choices import NORMS
from .errors import LandscapeError, check_choice, positive_int, seed_int, warn_user
from .params import ParamLayout, check_finite, float_state_buffers, model_dtype, unwrap_model

IGNORES = ("biasbn", None)
_EPS = 1e-10


@dataclass(frozen=True, eq=False)
class Directions:
    """``n`` directions over a model's flattened tensors, with where they came from.

    ``vectors`` is a float32 CPU tensor of shape (n, n_params), float64 for a float64 model
    (``vector_dtype``: evaluation casts them to the model's dtype, and float32 would round a
    filter norm or the far end of a path by ~1e-7); ``layout`` says
    which model tensors the columns belong to; ``provenance`` records the scheme,
    seed, normalization and diagnostics (norms, cosines).

    Made by ``random_directions``, ``as_directions`` (your own tensors), ``pca_directions``,
    ``hessian_directions``, ``plane_directions`` and the reference-file loaders, rather than by hand.

    Parameters
    ----------
    vectors : torch.Tensor
        Shape (n, n_params), in the units of the weights.
    layout : ParamLayout
        The model's flattened tensors (``ParamLayout.of(model)``).
    provenance : Mapping, optional
        What made them (read by ``compute_surface`` and the figures' labels).

    Raises
    ------
    LandscapeError
        ``vectors`` not of shape (n, layout.n_params).
    """

    vectors: torch.Tensor
    layout: ParamLayout
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        v = self.vectors
        if v.ndim != 2 or v.shape[1] != self.layout.n_params:
            raise LandscapeError(
                f"direction vectors of shape {tuple(v.shape)} do not fit a layout of "
                f"{self.layout.n_params} values; expected (n, {self.layout.n_params})"
            )

    @property
    def n(self) -> int:
        return int(self.vectors.shape[0])

    def __len__(self) -> int:
        return self.n

    @property
    def scheme(self) -> str:
        return str(self.provenance.get("scheme", "user"))

    def fingerprint(self) -> str:
        """Hash of the exact values and layout: the part of a surface's spec they define."""
        h = hashlib.sha256(self.layout.fingerprint().encode())
        h.update(np.ascontiguousarray(self.vectors.numpy()).tobytes())
        return h.hexdigest()[:24]

    def cosines(self) -> np.ndarray:
        return _cosines(self.vectors)

    def as_state_dicts(self) -> list[dict[str, torch.Tensor]]:
        """Each direction as ``{tensor name: tensor}``, shaped like the model's tensors."""
        return [
            {e.name: t.clone() for e, t in zip(self.layout.entries, self.layout.split(v))}
            for v in self.vectors
        ]

    def with_provenance(self, **entries: Any) -> "Directions":
        """The same vectors and layout with ``entries`` added to (or replacing keys of) ``provenance``.

        >>> d = d.with_provenance(x_label="a → b", x_range=[-0.5, 1.5])

        Parameters
        ----------
        **entries
            Provenance keys and their values (JSON-friendly: labels, ranges, notes).

        Returns
        -------
        Directions
            A new object; ``vectors`` and ``layout`` are shared, not copied, and this
            one is unchanged.
        """
        return dataclasses.replace(self, provenance={**self.provenance, **entries})

    def suggested_grid(self, num: int, num_y: int | None = None, num_z: int | None = None) -> dict[str, tuple]:
        """``compute_surface``'s ``x=``, ``y=`` (and ``z=``) for these directions: per axis the range the scheme
        suggests (``provenance["x_range"]``, ``["y_range"]``; else -1..1) moved so that a point falls on 0, the
        model at the centre (for an interpolation or a plane through models, on 1 as well:
        `grid.range_through`). A suggested range is rarely symmetric, so ``x=(*x_range, 21)`` missed the
        centre, whose marker then showed a neighbour's loss (trial s35).

        >>> surf = lnb.compute_surface(model, data, d, **d.suggested_grid(21))

        Parameters
        ----------
        num, num_y, num_z : int
            Points along x, y and z (``num_y``, ``num_z`` default ``num``); only the axes the directions
            have are returned.

        Returns
        -------
        dict
            ``{"x": (start, stop, num), "y": ..., "z": ...}`` for the first ``n`` axes.

        Raises
        ------
        LandscapeError
            A count that is not a positive integer.
        """
        from .grid import range_through

        counts = {"x": num, "y": num if num_y is None else num_y, "z": num if num_z is None else num_z}
        unit = self.scheme in ("interpolate", "plane3")  # the second model at 1 on its axis
        out = {}
        for axis in ("x", "y", "z")[: min(self.n, 3)]:
            positive_int(f"num{'' if axis == 'x' else '_' + axis}", counts[axis])
            start, stop = self.provenance.get(f"{axis}_range", (-1.0, 1.0))
            out[axis] = (*range_through(float(start), float(stop), int(counts[axis]), unit=unit), int(counts[axis]))
        return out

    def select(self, idx: Sequence[int]) -> "Directions":
        prov, idx = dict(self.provenance), list(idx)
        if prov.get("orthogonalized"):  # where the vector drawn (and normalized) first went: the others' filter
            first = prov.get("first_drawn_at", 0)  # norms hold only roughly (re-trial s38)
            prov["first_drawn_at"] = idx.index(first) if first in idx else None
        return Directions(self.vectors[idx].clone(), self.layout, prov)

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` of arrays plus a JSON string; loading it runs no code."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"layout": self.layout.to_json(), "provenance": _jsonable(self.provenance)}
        with open(path, "wb") as fh:
            np.savez(fh, vectors=self.vectors.numpy(), meta=np.array(json.dumps(meta)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Directions":
        try:
            with np.load(Path(path), allow_pickle=False) as z:
                stored = z["vectors"]  # float64 stays float64 (paths between float64 models)
                vectors = torch.from_numpy(stored.astype(np.float64 if stored.dtype == np.float64 else np.float32))
                meta = json.loads(str(z["meta"]))
        except (OSError, KeyError, ValueError) as exc:
            raise LandscapeError(
                f"cannot read directions from {str(path)!r} ({exc}); expected a file written by "
                "Directions.save"
            ) from None
        return cls(vectors, ParamLayout.from_json(meta["layout"]), meta["provenance"])


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _cosines(vectors: torch.Tensor) -> np.ndarray:
    return _cosines_of(_gram(vectors)).numpy()


def _cosines_of(g: torch.Tensor) -> torch.Tensor:
    """The (n, n) cosines of the vectors whose Gram matrix is ``g``."""
    norms = g.diagonal().sqrt().clamp_min(_EPS ** 2)  # a zero vector: cosines 0, not NaN
    return g / norms[:, None] / norms[None, :]


def _max_offdiag(c: np.ndarray) -> float:
    if len(c) < 2:
        return 0.0
    return float(np.abs(c[~np.eye(len(c), dtype=bool)]).max())


def normalize_like(d: torch.Tensor, w: torch.Tensor, norm: str, ignore: str | None) -> torch.Tensor:
    """Scale direction tensor ``d`` relative to weight tensor ``w`` (one model tensor).

    ``filter``: each slice along dim 0 gets the norm of the matching slice of ``w``;
    ``layer``: the whole tensor gets ``‖w‖``; ``weight``: ``d * w`` elementwise;
    ``none``: unchanged. 1-D tensors (biases, norm-layer weights) become zero with
    ``ignore="biasbn"``; otherwise ``filter`` and ``layer`` scale them as one group.
    """
    if d.ndim <= 1 and ignore == "biasbn":
        return torch.zeros_like(d)
    if norm == "none":
        return d
    if norm == "weight":
        return d * w
    if norm == "filter" and d.ndim > 1:
        dn = d.reshape(d.shape[0], -1).norm(dim=1)
        wn = w.reshape(w.shape[0], -1).norm(dim=1)
        scale = wn / dn.clamp_min(_EPS)
        return d * scale.view(-1, *([1] * (d.ndim - 1)))
    return d * (w.norm() / d.norm().clamp_min(_EPS))


def how_made(provenance: Mapping) -> str:
    """What was done to random directions, from their provenance, for axis labels and titles:
    "filter-normalized" (the ``norm`` used), "raw" (``norm="none"`` or none recorded), then
    ", then orthogonalized" where `orthogonalize` (or ``orthogonalize=True``) ran after it."""
    norm = provenance.get("norm")
    done = f"{norm}-normalized" if norm not in (None, "none") else "raw"
    return done + (", then orthogonalized" if provenance.get("orthogonalized") else "")


def vector_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of direction vectors for ``model`` (random, PCA and user's directions, and the vectors between
    models of `landscape_nb.model_paths`): float64 for a float64 model (a float32 direction would hold its
    filter norms, and so the surface's coordinates, or t = 1 of a path, to ~1e-7 only), else float32."""
    return torch.float64 if model_dtype(model) == torch.float64 else torch.float32


def random_directions(
    model: nn.Module,
    n: int = 2,
    *,
    norm: str = "filter",
    ignore: str | None = "biasbn",
    seed: int = 0,
    orthogonalize: bool = False,
) -> Directions:
    """``n`` seeded Gaussian directions, normalized per ``norm`` (default: filter).

    >>> d = random_directions(model, n=2, norm="filter", ignore="biasbn", seed=0)

    Each direction is drawn from N(0, 1) per value, then rescaled tensor by tensor
    against the model's weights (``normalize_like``): with ``norm="filter"`` every
    filter (slice along dim 0) gets the norm of the matching weight filter, which
    removes the scale invariance that makes raw random directions misleading.
    With ``orthogonalize=True`` the set is orthogonalized by QR and each vector is
    rescaled to its original global norm; per-filter norms then hold only
    approximately (random high-dimensional directions are already nearly
    orthogonal; the cosines before/after are in ``provenance``).

    Parameters
    ----------
    model : torch.nn.Module
        The model whose trainable parameters (``named_parameters()`` order) the
        directions perturb; its weights set the filter norms.
    n : int, optional
        Number of directions, 1 to 64: 1 for a line, 2 for a plane.
    norm : {"filter", "layer", "weight", "none"}, optional
        ``"filter"``: per filter (Li et al. 2018); ``"layer"``: per tensor, to
        ``‖w‖``; ``"weight"``: ``d * w`` elementwise; ``"none"``: raw Gaussian.
    ignore : {"biasbn", None}, optional
        ``"biasbn"``: 1-D tensors (biases, norm-layer weights) get a zero
        direction; None: each gets a random direction of its own norm (normalized as
        one group). The reference implementation (``net_plotter.normalize_directions_for_weights``)
        sets such a direction to the weights themselves, d = w, instead: with ``ignore=None``
        its planes differ from these (up to 11× in a trial's BatchNorm net, s40), the same at
        the centre.
    seed : int, optional
        Seed of the ``torch.Generator`` the values are drawn from; the same seed
        and model give the same directions.
    orthogonalize : bool, optional
        Orthogonalize the set by QR (see above).

    Returns
    -------
    Directions
        ``vectors`` of shape (n, n_params), float32 on the CPU (float64 for a float64 model,
        drawn as float32 so a seed gives the same directions), in the units of the weights;
        ``provenance`` holds the scheme, norm, ignore, seed, the largest absolute cosine between directions before and after (``cosine_max_before``,
        ``cosine_max``), each vector's norm (``norms``), the parameters left out
        (``excluded``: frozen ones, not in the layout) and those given a zero
        direction (``zeroed``: 1-D tensors with ``ignore="biasbn"``).

    Raises
    ------
    LandscapeError
        An unknown ``norm`` or ``ignore`` (with a did-you-mean), ``n`` outside
        1..64, a ``seed`` that is not an integer from 0 to 2**64 - 1, a non-finite weight (unless ``norm="none"``),
        or (with ``orthogonalize``) linearly dependent directions.

    References
    ----------
    H. Li, Z. Xu, G. Taylor, C. Studer and T. Goldstein, "Visualizing the Loss
    Landscape of Neural Nets", NeurIPS 2018, §4 (filter normalization).
    """
    if norm in ("dfilter", "dlayer"):  # the reference's "d" variants: "did you mean 'filter'?" named another one
        raise LandscapeError(
            f"norm={norm!r} (the reference implementation's normalization of the direction alone, each "
            f"{norm[1:]} to unit norm, not to the weights' norm) is not offered; expected one of {list(NORMS)}: "
            f"norm={norm[1:]!r} is Li et al.'s {norm[1:]} normalization (the paper's), or normalize directions "
            "of your own and pass them with as_directions(model, dirs)")
    check_choice("norm", norm, NORMS)
    check_choice("ignore", ignore, IGNORES)
    if not isinstance(n, (int, np.integer)) or n < 1 or n > 64:
        raise LandscapeError(f"n={n!r} directions requested; expected an integer from 1 to 64 (2 for a plane)")
    seed_int(seed, "the Gaussian draw")
    model = unwrap_model(model)
    layout = ParamLayout.of(model)
    dtype = vector_dtype(model)
    weights = [t.detach().to(dtype).cpu() for t in layout.tensors(model)]
    if norm != "none":  # a NaN/inf weight would make its normalized direction NaN: name the weight, not that
        check_finite(layout, weights, f", so its {norm}-normalized direction would be too")
    gen = torch.Generator().manual_seed(int(seed))
    rows = []
    for _ in range(n):
        parts = [normalize_like(torch.randn(w.shape, generator=gen).to(dtype), w, norm, ignore) for w in weights]
        rows.append(torch.cat([p.reshape(-1) for p in parts]))
    vectors = torch.stack(rows)
    if not bool(vectors.ne(0).any()):
        raise LandscapeError(
            f"random directions with norm={norm!r}, ignore={ignore!r} are all zeros: every trainable parameter is "
            "left out (ignore='biasbn' leaves out biases and BatchNorm weights) or has zero weights (a normalized "
            "direction takes its weight's norm); expected a model with weights to move: pass ignore=None, or "
            "norm='none'")
    prov: dict[str, Any] = {"scheme": "random", "norm": norm, "ignore": ignore, "seed": int(seed),
                            "excluded": [f"{name} (frozen)" for name, p in model.named_parameters()
                                         if not p.requires_grad],
                            "zeroed": [e.name for e, w in zip(layout.entries, weights)
                                       if w.ndim <= 1 and ignore == "biasbn"]}
    prov["cosine_max_before"] = _max_offdiag(_cosines(vectors))
    if orthogonalize:
        vectors = _orthogonalize(vectors)
        prov["scheme"] = "random-orthogonal"
    prov["orthogonalized"] = bool(orthogonalize)
    prov["cosine_max"] = _max_offdiag(_cosines(vectors))
    prov["norms"] = vectors.double().norm(dim=1).tolist()
    # which weights they were scaled to, where the directions cannot tell (norm="weight", an orthogonalized
    # selection without its first vector: trial s38): spec.made_around
    from .spec import weights_sketch

    prov["centre_sketch"] = weights_sketch(model)
    return Directions(vectors, layout, prov)


def _orthogonalize(vectors: torch.Tensor) -> torch.Tensor:
    """QR of the (n_params × n) matrix in float64; columns keep their original norms and the
    input's precision (float64 stays float64, anything else becomes float32)."""
    v = vectors.double()
    q, r = torch.linalg.qr(v.T, mode="reduced")
    if (r.diagonal().abs() < 1e-12 * v.norm(dim=1).max()).any():
        raise LandscapeError(
            "the directions are linearly dependent and cannot be orthogonalized; "
            "use different seeds or fewer directions"
        )
    q = q * torch.sign(r.diagonal())[None, :]
    return (q.T * v.norm(dim=1)[:, None]).to(torch.float64 if vectors.dtype == torch.float64 else torch.float32)


def orthogonalize(directions: Directions) -> Directions:
    """The same directions orthogonalized by QR (norms kept); cosines before/after recorded.

    Parameters
    ----------
    directions : Directions
        ``n`` linearly independent directions, vectors of shape (n, n_params).

    Returns
    -------
    Directions
        Orthogonal vectors of shape (n, n_params) spanning the same space, each
        with its original Euclidean norm; vector i is the component of input i
        orthogonal to inputs 0..i−1, so filter norms hold only approximately.
        ``provenance`` adds ``cosine_max_before``, ``cosine_max`` and
        ``orthogonalized=True``.

    Raises
    ------
    LandscapeError
        If the directions are linearly dependent.
    """
    g = _check_spanning(directions.vectors)  # float32 rounding of dependent ones would become a direction
    prov = dict(directions.provenance)
    prov["cosine_max_before"] = _max_offdiag(_cosines_of(g).numpy())
    vectors = _orthogonalize(directions.vectors)
    prov["cosine_max"] = _max_offdiag(_cosines(vectors))
    prov["first_drawn_at"] = 0 if prov.get("first_drawn_at", 0) == 0 else None  # vector 0 is kept as it was
    prov["orthogonalized"] = True
    return Directions(vectors, directions.layout, prov)


DEPENDENT_TOL = 1e-3  # smallest singular value of the unit-norm directions: |cosine| > 1 - 5e-7 for two
_GRAM_CHUNK = 1 << 20  # parameters per float64 block of the Gram matrix (8 MB per direction)


def _gram(vectors: torch.Tensor) -> torch.Tensor:
    """``vectors @ vectors.T`` in float64, (n, n), a block of parameters at a time (no float64 copy of all)."""
    g = torch.zeros(len(vectors), len(vectors), dtype=torch.float64)
    for i in range(0, vectors.shape[1], _GRAM_CHUNK):
        block = vectors[:, i:i + _GRAM_CHUNK].double()
        g += block @ block.T
    return g


def _check_spanning(vectors: torch.Tensor) -> torch.Tensor:
    """Refuse directions with NaN/inf values, and planes or volumes with a zero or dependent direction;
    the (n, n) float64 Gram matrix of ``vectors`` (for their cosines).

    NaN/inf would make every point NaN. In a plane, a zero direction draws a flat axis and two
    parallel ones a surface varying along one line only, repeated across the plane: plausible
    pictures of nothing. A single zero direction is a line that stays at the centre (e.g. the
    path between two identical models), which its flat plot shows as it is.
    """
    g = _gram(vectors)  # its diagonal (squared norms, in float64) is finite iff the direction is
    for k, sq in enumerate(g.diagonal().tolist()):
        if not math.isfinite(sq):
            bad = int((~torch.isfinite(vectors[k])).sum())
            raise LandscapeError(
                f"direction {k} holds {bad} non-finite value(s) (NaN or inf; directions are held in float32, "
                "which overflows beyond 3.4e38); expected finite directions (e.g. from random_directions; a "
                "zero-norm layer normalized by hand gives NaN)")
    if len(vectors) < 2:
        return g
    for k, sq in enumerate(g.diagonal().tolist()):
        if sq == 0:
            raise LandscapeError(
                f"direction {k} of {len(vectors)} is all zeros (in float32, which holds magnitudes down to "
                "1.4e-45): it moves no weight, so its axis would show a flat loss that is not the model's; "
                "expected non-zero directions (e.g. from lnb.random_directions)")
    cos = _cosines_of(g)
    if float(torch.linalg.eigvalsh(cos).clamp_min(0).min().sqrt()) < DEPENDENT_TOL:  # singular values of unit rows
        c = cos.abs().fill_diagonal_(0).numpy()
        i, j = sorted(np.unravel_index(int(c.argmax()), c.shape))
        which = (f"directions {i} and {j} are parallel, so linearly dependent (|cosine| {c[i, j]:.7f})"
                 if c[i, j] > 1 - DEPENDENT_TOL ** 2
                 else f"the {len(vectors)} directions are linearly dependent (one is a combination of the others)")
        raise LandscapeError(
            f"{which}: the surface would vary along fewer axes than it shows; expected {len(vectors)} linearly "
            "independent directions, e.g. another seed of lnb.random_directions")
    return g


def _untied(model: nn.Module, item: Mapping, k: int) -> Mapping:
    """``item`` with each tied tensor (a parameter or buffer under several names, e.g. tied embedding and
    decoder weights) under its first name, wherever it was given; refused where its names give different
    values: it is one tensor, moved once, and which values were meant would be a guess."""
    names: dict[int, list[str]] = {}
    for name, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        names.setdefault(id(t), []).append(name)
    item = dict(item)
    for group in names.values():
        given = [name for name in group if name in item]
        for other in given[1:]:
            a, b = torch.as_tensor(item[given[0]]), torch.as_tensor(item[other])
            if a.shape == b.shape and not torch.equal(a.detach().cpu(), b.detach().cpu()):
                raise LandscapeError(
                    f"direction {k} gives {given[0]!r} and {other!r} different values, but they are one tied tensor "
                    f"of {type(model).__name__}, moved once; expected the same tensor under both names, as "
                    f"model.state_dict() has, or under one of its names only")
        if given and group[0] not in item:
            item[group[0]] = item[given[0]]
    return item


def _warn_if_a_point(vectors: torch.Tensor, provenance: dict | None = None) -> None:
    """A line along an all-zero direction (in a plane it is refused) stays at the centre: its flat plot is true,
    but rarely what was meant (two identical models interpolated, a direction zeroed by hand); say so, naming
    the two models where the line is an interpolation (its axis label names them)."""
    if len(vectors) != 1 or bool(vectors.any()):
        return
    prov = provenance or {}
    if prov.get("scheme") == "interpolate":
        label = str(prov.get("x_label", "interpolation"))
        ends = label.removeprefix("interpolation ").split(" → ")
        both = f"{ends[0]} and {ends[1]}" if len(ends) == 2 else "the two models"
        warn_user(f"landscape_nb: the line {label} has no length: {both} hold the same weights, so every point of "
                  "the line is the same model and the plot a flat line at its loss; expected two different models "
                  "(e.g. the final model and an earlier checkpoint)")
    else:
        warn_user("landscape_nb: direction 0 is all zeros: it moves no weight, so every point of the line is the "
                  "centre and the plot a flat line at its loss (two identical models interpolated? a direction that "
                  "leaves out every parameter?)")


def as_directions(model: nn.Module, directions) -> Directions:
    """Accept ``Directions``, a list of state-dict-like dicts, a list of flat vectors,
    or a (n, n_params) tensor/array, and check they fit ``model``.

    >>> d = as_directions(model, [{name: torch.randn_like(p) for name, p in model.named_parameters()}])

    User-supplied directions are used as given (not normalized): normalize them
    first (e.g. with ``normalize_like``) if filter-normalized axes are wanted.

    Parameters
    ----------
    model : torch.nn.Module
        The model the directions perturb.
    directions : Directions, sequence or array
        ``Directions`` (checked against ``model`` and returned as is); a sequence of
        mappings ``{parameter name: tensor of the parameter's shape}`` (floating-point
        buffers too, e.g. BatchNorm running statistics as in a ``state_dict``: moved
        where non-zero, named in ``provenance["buffers"]``; where a point makes a BatchNorm
        ``running_var`` negative its values are NaN, as in the reference, and count in
        ``Surface.n_diverged``); a sequence
        of flat vectors of n_params values each (``named_parameters()`` order); or
        a tensor/array of shape (n, n_params) or (n_params,). A tied parameter (one tensor under
        several names) may be given under any or all of its names, with the same values.

    Returns
    -------
    Directions
        Vectors of shape (n, n_params), float32 on the CPU (float64 for a float64 model), with
        ``provenance["scheme"] == "user"``, ``cosine_max`` and ``norms``.

    Raises
    ------
    LandscapeError
        Directions of another architecture, a missing tensor, a name the model does not
        have, a tied tensor given different values under its names, a tensor of the wrong shape, a
        vector of the wrong length, an empty list or an unsupported type; a direction with NaN/inf
        values; for 2 or 3 directions, one that is all zeros or
        directions that are linearly dependent (the smallest singular value of the unit-norm vectors under
        ``DEPENDENT_TOL``, e.g. two parallel ones), which would span fewer axes than drawn.
        ``Directions`` objects are checked the same way.
    """
    model = unwrap_model(model)
    if isinstance(directions, Directions):
        directions.layout.check_model(model)
        _check_spanning(directions.vectors)  # also from files and schemes: e.g. a reference --same_dir plane
        _warn_if_a_point(directions.vectors, directions.provenance)
        return directions
    layout = ParamLayout.of(model)
    if isinstance(directions, (torch.Tensor, np.ndarray)):
        items = list(torch.as_tensor(directions).reshape(-1, directions.shape[-1])) if directions.ndim == 2 else [directions]
    elif isinstance(directions, Sequence) and not isinstance(directions, (str, bytes)):
        items = list(directions)
    else:
        raise LandscapeError(
            f"directions of type {type(directions).__name__}; expected Directions (from random_directions), "
            "a list of state-dict-like dicts, or a list of flat tensors with one value per trainable parameter"
        )
    if not items:
        raise LandscapeError("an empty list of directions; expected 1 (a line), 2 (a plane) or 3 (a volume)")
    rows, dtype = [], vector_dtype(model)
    frozen = {name: p for name, p in model.named_parameters() if not p.requires_grad}
    buffers = {name for name, b in model.named_buffers() if b.is_floating_point()}
    moved_buffers = sorted({name for item in items if isinstance(item, Mapping) for name in buffers
                            if name in item and bool(torch.as_tensor(item[name]).ne(0).any())})
    caches = sorted(set(moved_buffers) - {name for name, _ in float_state_buffers(model)})
    if caches:
        raise LandscapeError(f"the directions move {caches[:3]}, non-persistent buffers of {type(model).__name__} "
                             "(a cache, not in its state_dict, which a forward may rebuild); expected directions over "
                             "parameters and state_dict buffers: give those entries zeros, or leave them out")
    if moved_buffers:  # e.g. BatchNorm running statistics, as the reference's dir_type="states" moves them
        layout = ParamLayout.of(model, include_buffers=True)
    known = ({e.name for e in layout.entries} | set(frozen)  # tied aliases too, as a state_dict has them
             | {name for name, _ in model.named_parameters(remove_duplicate=False)}
             | {name for name, _ in model.named_buffers(remove_duplicate=False)})
    for k, item in enumerate(items):
        if isinstance(item, Mapping):
            unknown = [name for name in item if name not in known]
            if unknown:
                close = {u: difflib.get_close_matches(str(u), sorted(known), n=1) for u in unknown[:3]}
                hint = "; ".join(f"did you mean {c[0]!r} for {u!r}?" for u, c in close.items() if c)
                raise LandscapeError(
                    f"direction {k} has tensors for {unknown[:3]}{' and more' if len(unknown) > 3 else ''}, which "
                    f"{type(model).__name__} does not have; expected names from model.named_parameters() (and "
                    f"floating-point buffers){' (' + hint + ')' if hint else ''}")
            item = _untied(model, item, k)
            moved = [name for name in frozen if name in item and bool(torch.as_tensor(item[name]).ne(0).any())]
            if moved:
                raise LandscapeError(
                    f"direction {k} moves {moved[:3]}{' and more' if len(moved) > 3 else ''}, frozen in the model "
                    "(requires_grad=False), which directions leave out; expected zero there, or call "
                    "requires_grad_(True) on those parameters to move them in the plot")
            missing = [e.name for e in layout.entries if e.name not in item and e.kind != "buffer"]
            if missing:
                raise LandscapeError(
                    f"direction {k} has no tensor for {missing[:3]}; expected a tensor for every trainable "
                    f"parameter of the model (e.g. from model.named_parameters())"
                )
            parts = []
            for e in layout.entries:
                if e.name not in item:  # a buffer this direction does not move
                    parts.append(torch.zeros(math.prod(e.shape)))
                    continue
                t = torch.as_tensor(item[e.name]).detach().to(dtype).cpu()
                if tuple(t.shape) != e.shape:
                    raise LandscapeError(
                        f"direction {k}, tensor {e.name!r} has shape {tuple(t.shape)}; expected {e.shape} "
                        "(the model's parameter shape)"
                    )
                parts.append(t.reshape(-1))
            rows.append(torch.cat(parts))
        else:
            t = torch.as_tensor(item).detach().to(dtype).cpu().reshape(-1)
            if t.numel() != layout.n_params:
                raise LandscapeError(
                    f"direction {k} has {t.numel()} values; expected {layout.n_params} (one per trainable "
                    "parameter of the model, in named_parameters() order)"
                )
            rows.append(t)
    vectors = torch.stack(rows)
    cosines = _cosines_of(_check_spanning(vectors)).numpy()
    _warn_if_a_point(vectors)
    prov = {"scheme": "user", "cosine_max": _max_offdiag(cosines), "norms": vectors.double().norm(dim=1).tolist()}
    if frozen:  # held fixed: named in the provenance and so in the figures' hover
        prov["excluded"] = [f"{name} (frozen)" for name in frozen]
    if moved_buffers:  # moved as given: a running_var negative at a point gives NaN there, as in the reference
        prov["buffers"] = moved_buffers
    return Directions(vectors, layout, prov)
