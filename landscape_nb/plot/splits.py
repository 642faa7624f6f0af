"""Train and test curves of one line in one figure (Li et al. 2018, Figure 1): loss on the left
axis, accuracy (or another metric) on the right, one colour per quantity and one dash per split.

Imports neither torch, Dask nor ipywidgets.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..errors import LandscapeError
from ..surface import Surface, metric_splits
from ._common import (
    _check_surface,
    _title,
    _transform,
    as_written,
    default_metric,
    log_ticks,
    note_partial,
    note_sources,
    note_undrawn_metrics,
    refuse_log_of_non_positive,
    template_text,
)

__all__ = ["line_splits", "split_curves"]

LOSS_COLOR, METRIC_COLOR = "#1f77b4", "#d62728"  # the paper's Figure 1: blue loss, red accuracy
DASHES = ("solid", "dash", "dot", "dashdot", "longdash")


def _split_metrics(surf: Surface) -> dict[str, dict[str, np.ndarray]]:
    """``{split: {"loss": ..., metric: ...}}`` of a surface's ``"<split>_loss"``/``"<split>_<metric>"``
    metrics, and first its own loss and unprefixed metrics where its provenance names their split and no
    ``"<split>_loss"`` holds them (a reference file's train_loss beside its test_loss was left out, trial s35)."""
    out = {k: {"loss": surf.metrics[f"{k}_loss"],
               **{m[len(k) + 1:]: v for m, v in surf.metrics.items() if m.startswith(f"{k}_") and m != f"{k}_loss"}}
           for k in metric_splits(surf.metrics)}
    own = surf.provenance.get("split")
    if isinstance(own, str) and own not in out:
        taken = {f"{k}_{q}" for k, qs in out.items() for q in qs}
        out = {own: {"loss": surf.loss, **{m: v for m, v in surf.metrics.items() if m not in taken}}, **out}
    return out


def split_curves(surface, *, metric: str | None = "accuracy",
                 splits: Sequence[str] | None = None) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """The x values and ``{split: {"loss": ..., metric: ...}}`` curves a ``line_splits`` figure draws.

    Parameters
    ----------
    surface : Surface or mapping of str to Surface
        A 1D surface computed with ``data={"train": ..., "test": ...}`` (metrics ``"<split>_loss"``,
        ``"<split>_<metric>"``), or separate 1D surfaces by split name on one grid (their ``loss``
        and ``metrics[metric]``).
    metric : str or None, default "accuracy"
        The metric for the right axis; None: loss only. Splits without it draw loss only. The default
        is, where no split has an accuracy (a regression), their one metric where they all have the same
        one and only it (`default_metric`).
    splits : sequence of str, optional
        Which splits, in order; default all (those with a ``"<split>_loss"`` metric).

    Returns
    -------
    (numpy.ndarray, dict)
        ``x`` of shape (n_x,) and per split a dict of arrays of shape (n_x,).

    Raises
    ------
    LandscapeError
        Not 1D, no splits, an unknown split, a ``metric`` (other than "accuracy") no split has, or separate
        surfaces on different grids, along other directions, around another model or of another loss (their
        ``spec``s).
    """
    x, curves, _, _ = _resolved(surface, metric, splits)
    return x, curves


def _resolved(surface, metric: str | None, splits: Sequence[str] | None):
    """``split_curves``'s x and curves, the metric drawn (`default_metric`) and each split's metric names."""
    x, every = _all_curves(surface, splits)
    names = {k: sorted(set(c) - {"loss"}) for k, c in every.items()}
    metric = default_metric(metric, list(names.values()))
    _check_metric(metric, every, names)
    return x, {k: {q: v for q, v in c.items() if q in ("loss", metric)} for k, c in every.items()}, metric, names


def _all_curves(surface, splits: Sequence[str] | None) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """``split_curves`` with every metric of each split: x and ``{split: {"loss": ..., metric: ..., ...}}``."""
    if isinstance(surface, Mapping):
        if not surface:
            raise LandscapeError("plot.line_splits: an empty mapping; expected {'train': surf, 'test': surf, ...}")
        items = {str(k): _check_surface(s, ndim=1, where=f"plot.line_splits (split {k!r})") for k, s in surface.items()}
        k0, first = next(iter(items.items()))
        for k, s in items.items():
            if not np.array_equal(np.asarray(s.x), np.asarray(first.x)):
                raise LandscapeError(f"plot.line_splits: split {k!r} is on another x grid; expected one grid")
            for part, what in (("directions", "along other directions"), ("model", "around another model"),
                               ("eval", "with another loss")):  # mse and mae drawn as one "loss" (re-trial s42)
                mine, theirs = (_identity(t.spec, part) for t in (s, first))
                if mine is not None and theirs is not None and mine != theirs:  # drawn as one line (trial s42)
                    raise LandscapeError(
                        f"plot.line_splits: split {k!r} was computed {what} than split {k0!r} (their spec's "
                        f"{part!r} differ), so its curves are of another line; expected every split on one line: "
                        "compute them in one call, compute_surface(model, {'train': ..., 'test': ...}, d, x=...), "
                        "or each with the same model and directions (plot.line overlays lines of their own)")
        curves = {k: {"loss": np.asarray(s.loss, float), **{m: np.asarray(v, float) for m, v in s.metrics.items()}}
                  for k, s in items.items()}
        names = _checked(splits, list(curves)) if splits is not None else list(curves)
        return np.asarray(first.x, float), {k: curves[k] for k in names}
    surf = _check_surface(surface, ndim=1, where="plot.line_splits")
    found = _split_metrics(surf)
    if not found:
        raise LandscapeError(f"plot.line_splits: the surface has metrics {sorted(surf.metrics)} but no "
                             "'<split>_loss'; expected one computed with data={'train': ..., 'test': ...}, or pass "
                             "{'train': surf_train, 'test': surf_test}")
    names = _checked(splits, list(found)) if splits is not None else list(found)
    return np.asarray(surf.x, float), {k: {q: np.asarray(v, float) for q, v in found[k].items()} for k in names}


def _check_metric(metric: str | None, curves: dict, known: dict[str, list[str]]) -> None:
    """Refuse a ``metric`` no split has, as ``plot.line`` does (a misspelt one drew the losses alone with no word,
    trial s40); the default, "accuracy", may be missing (a regression has none)."""
    if metric not in (None, "accuracy") and not any(metric in c for c in curves.values()):
        raise LandscapeError(f"plot.line_splits: metric={metric!r}, which no split has (their metrics: {known}); "
                             "pass one of those, or metric=None for the losses only")


def _identity(spec, part: str):
    """What names a surface's ``part`` of its spec ("directions": their fingerprint, "model": its class and
    weights, "eval": its loss's name and fingerprint), None where it has none (a hand-made or loaded surface)."""
    entry = spec.get(part) if isinstance(spec, Mapping) else None
    if not isinstance(entry, Mapping):
        return None
    if part == "eval":
        return entry.get("loss_name"), entry.get("loss_fingerprint")
    return entry.get("fingerprint") if part == "directions" else (entry.get("class"), entry.get("weights"))


def _checked(splits: Sequence[str], known: list[str]) -> list[str]:
    splits = list(splits)
    unknown = [s for s in splits if s not in known]
    if unknown or not splits:
        raise LandscapeError(f"plot.line_splits: splits={splits!r}; expected a non-empty list among {known}")
    return splits


def line_splits(
    surface,
    *,
    metric: str | None = "accuracy",
    splits: Sequence[str] | None = None,
    log: bool = False,
    title: str | None = None,
) -> go.Figure:
    """Loss and accuracy on several data splits along one line, in one figure (Li et al. 2018,
    Figure 1 [1]_): loss on the left axis in blue, the metric on the right in red, the first split
    solid and the next ones dashed, dotted, ...

    >>> surf = lnb.compute_surface(model, {"train": ex.train, "test": ex.test}, d, x=(-1, 1, 51))
    >>> lnb.plot.line_splits(surf)

    Parameters
    ----------
    surface : Surface or mapping of str to Surface
        A 1D surface computed with ``data={"train": ..., "test": ...}`` (it has metrics
        ``"<split>_loss"`` and ``"<split>_<metric>"``), or separate 1D surfaces by split name
        on one x grid.
    metric : str or None, default "accuracy"
        The metric on the right axis; None draws the losses only. As ``split_curves``; where the
        splits' metrics are not drawn, a note above the plot names them.
    splits : sequence of str, optional
        Which splits, in order (default all).
    log : bool, default False
        Logarithmic loss axis (the values are not transformed).
    title : str, optional
        Default: the surface's label.

    Returns
    -------
    plotly.graph_objects.Figure
        One ``Scatter`` per split and quantity, named ``"<split> loss"`` / ``"<split> <metric>"``;
        gaps where a point is not computed or diverged.

    Raises
    ------
    LandscapeError
        As ``split_curves``.

    References
    ----------
    .. [1] H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein, "Visualizing the Loss Landscape of
       Neural Nets", NeurIPS 2018.
    """
    x, curves, metric, names = _resolved(surface, metric, splits)
    refuse_log_of_non_positive(log, [v["loss"] for v in curves.values() if "loss" in v], "plot.line_splits")
    first = surface if isinstance(surface, Surface) else next(iter(surface.values()))
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for k, (split, values) in enumerate(curves.items()):
        dash = DASHES[k % len(DASHES)]
        for q, arr in values.items():
            is_loss = q == "loss"
            fig.add_trace(
                go.Scatter(x=x, y=_transform(arr, log=False, clip=False), mode="lines", name=as_written(f"{split} {q}"),
                           line=dict(color=LOSS_COLOR if is_loss else METRIC_COLOR, dash=dash),
                           hovertemplate=f"{template_text(f'{split} {q}')}: %{{y:.4g}}<extra></extra>"),
                secondary_y=not is_loss,
            )
    fig.update_xaxes(title_text=as_written(first.x_label))  # plain text, as fit_title has it
    fig.update_yaxes(title_text="loss", type="log" if log else "linear", secondary_y=False,
                     **(log_ticks([v["loss"] for v in curves.values() if "loss" in v]) if log else {}),
                     title_font_color=LOSS_COLOR, tickfont_color=LOSS_COLOR)
    if any(t.yaxis == "y2" for t in fig.data):
        fig.update_yaxes(title_text=as_written(metric), secondary_y=True, showgrid=False, tickmode="auto",
                         title_font_color=METRIC_COLOR, tickfont_color=METRIC_COLOR)  # its own round ticks: synced
        # to the loss's grid they read 0.7496, 0.7828, ... (trial s57)
    fig.update_layout(title=_title(title, first), hovermode="x unified")
    surfaces = [surface] if isinstance(surface, Surface) else list(surface.values())
    note_partial(fig, surfaces)
    note_sources(fig, surfaces)
    note_undrawn_metrics(fig, metric, names)
    from .figures import add_line_models

    # the models at 0 and 1 of a line between them, on the first split's loss, as plot.line marks them (s57)
    add_line_models(fig, [first], [str(first.provenance.get("label", ""))])
    return fig
