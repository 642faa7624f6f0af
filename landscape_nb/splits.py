"""Several named data splits evaluated at every grid point in one computation.

``compute_surface(model, {"train": ..., "test": ...}, ...)`` builds a ``SplitEvaluator``: one
``Evaluator`` per split, all on the same (perturbed) model, so the paper's Figure 1 (train and
test loss and accuracy along one line) is one run, one store and one set of tiles. Columns are
the first split's loss (the surface's ``loss``), then ``<split>_loss`` and ``<split>_<metric>``
for each split in the mapping's order.
"""
from __future__ import annotations

import contextlib
import hashlib
import re
from typing import Any, Callable, Mapping

import numpy as np
import torch

from .errors import LandscapeError
from .evaluate import Cancelled, Evaluator

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")


def is_splits(data) -> bool:
    """Whether ``data`` is named splits (``{"train": ..., "test": ...}``, each value a data set)
    rather than one batch given as a dict of tensors (``{"input_ids": ..., "labels": ...}``)."""
    return isinstance(data, Mapping) and not any(
        isinstance(v, torch.Tensor) for v in data.values())


def split_names(data: Mapping) -> list[str]:
    """The split names of a ``data`` mapping, checked: at least one, each a letter followed by
    letters, digits or hyphens (no underscore: ``<split>_<quantity>`` must split back apart)."""
    names = list(data)
    if not names:
        raise LandscapeError("data={}: an empty mapping; expected named splits, e.g. "
                             "data={'train': (x_train, y_train), 'test': (x_test, y_test)}")
    for n in names:
        if not isinstance(n, str) or not NAME.match(n):
            raise LandscapeError(f"data split name {n!r}; expected a string starting with a letter, of letters, "
                                 "digits or hyphens (e.g. 'train', 'test', 'val-1'): it names the metrics "
                                 "'<split>_loss', '<split>_accuracy'")
    return names


def column_names(splits: Mapping[str, list[str]]) -> list[str]:
    """Metric names after the loss column: ``<split>_loss`` then ``<split>_<metric>`` per split."""
    return [f"{s}_{q}" for s, metrics in splits.items() for q in ["loss", *metrics]]


class SplitEvaluator:
    """Loss and metrics on several named data splits at each point ``w0 + Σ c_k d_k``.

    One ``Evaluator`` per split, all on one model (the first one's: a private device copy is
    made once, not per split). Where every split settles on one point per pass, each point's
    weights are written once and every split is evaluated on them; until the batch sizes and
    points per pass are chosen (the first points), or where a split stacks points
    (``points_per_pass`` > 1), each split's evaluator runs the call on its own.

    Parameters
    ----------
    model : torch.nn.Module
        The network at the centre ``w0``.
    data : mapping of str to data
        Named splits, e.g. ``{"train": (x, y), "test": (x, y)}``; each in any form
        ``Evaluator`` accepts. The first is the primary: its loss is column 0.
    directions, layout, loss_fn, metrics, settings, device, bn_data
        As for ``Evaluator``; shared by every split (``max_samples`` sub-samples each split;
        in ``"bn-recompute"`` mode every split re-estimates BatchNorm on ``bn_data`` if given,
        else on the first split's data: the training data's statistics, as the model would
        keep them, not each split's own, which would fit the statistics to the test set).

    Raises
    ------
    LandscapeError
        An empty mapping, a bad split name, or data of a split the evaluator rejects (the
        message names the split).
    """

    def __init__(self, model, data: Mapping[str, Any], directions: torch.Tensor, layout, *, loss_fn=None,
                 metrics="auto", settings=None, device=None, bn_data=None):
        self.splits: dict[str, Evaluator] = {}
        names = split_names(data)
        mode = getattr(settings, "mode", "eval")
        bn_split = None
        if bn_data is None and mode in ("bn-recompute", "bn") and len(names) > 1:
            # every split's statistics from the primary one (the training data): the test split's own batch
            # statistics would fit the model to the test set (a test loss up to 2 nats lower than the model's)
            bn_split = names[0]
        for name in names:
            try:
                ev = Evaluator(model, data[name], directions, layout, loss_fn=loss_fn, metrics=metrics,
                               settings=settings, device=device, bn_data=bn_data)
            except LandscapeError as exc:
                raise LandscapeError(f"data split {name!r}: {exc}") from exc
            if not self.splits:
                model, device = ev.model, ev.device  # the others share the first one's model
                if bn_split is not None:  # the primary's samples as read (its max_samples subset), for the others
                    bn_data = ev._data.tree
            if bn_split is not None and "bn_recompute" in ev.notes:
                ev.notes["bn_recompute"] += f"; the samples of split {bn_split!r}, for every split"
            self.splits[name] = ev
        self.primary = next(iter(self.splits.values()))
        self.metric_names = column_names({s: ev.metric_names for s, ev in self.splits.items()})
        h = hashlib.sha256()
        for s, ev in self.splits.items():
            h.update(f"{s}={ev.data_fingerprint};".encode())
        self.data_fingerprint = h.hexdigest()[:24]
        self.n_samples = sum(ev.n_samples for ev in self.splits.values())
        self.device = self.primary.device
        self.bn_fold = self.primary.bn_fold
        # with the first split's statistics for all, the others' fingerprint of them: the spec says so
        shared = list(self.splits.values())[1].bn_fingerprint if bn_split is not None else None
        self.bn_fingerprint = shared or self.primary.bn_fingerprint
        self.bn_pass_size = self.primary.bn_pass_size

    @property
    def tuning(self) -> bool:
        return any(ev.tuning for ev in self.splits.values())

    @property
    def batch_size(self) -> int | None:
        """The primary split's batch size (None while any split is still tuning)."""
        return None if self.tuning else self.primary.batch_size

    @property
    def points_per_pass(self) -> int | None:
        return self.primary.points_per_pass

    @property
    def grouped_calls(self) -> bool:
        return self.primary.grouped_calls

    @grouped_calls.setter
    def grouped_calls(self, value: bool) -> None:
        for ev in self.splits.values():
            ev.grouped_calls = value

    @property
    def notes(self) -> dict:
        """Each split's notes (how targets, loss and accuracy were chosen; why points were not stacked),
        keyed "<split>: <note>"."""
        return {f"{name}: {k}": v for name, ev in self.splits.items() for k, v in ev.notes.items()}

    def settle(self) -> None:
        for ev in self.splits.values():
            ev.settle()

    def points_wanted(self) -> int:
        """The most points any split's evaluator asks for per call (``Evaluator.points_wanted``)."""
        return max(ev.points_wanted() for ev in self.splits.values())

    @contextlib.contextmanager
    def session(self):
        """Every split's session at once: the shared model is snapshotted before any point and
        put back bit-identically when the outermost one ends."""
        with contextlib.ExitStack() as stack:
            for ev in self.splits.values():
                stack.enter_context(ev.session())
            yield

    def _shared_pass(self) -> bool:
        """Whether a point can be set once for all splits: batch sizes settled, one point per pass
        chosen and the shared-layer trial done everywhere (on a GPU it runs after the stacking trial),
        and no TF32 (the shared pass opens the primary's fp32 flags)."""
        evs = self.splits.values()
        return (not self.tuning and all(ev.points_per_pass == 1 and not ev._shared_plan for ev in evs)
                and all(ev.settings.precision != "tf32" for ev in evs))

    def evaluate(self, coords: np.ndarray, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
        """Values at each row of ``coords`` (n_points, n_dirs): (n_points, 1 + len(metric_names)),
        column 0 the primary split's loss, then each split's loss and metrics. Raises ``Cancelled``
        when ``should_stop`` returns True between points."""
        coords = np.asarray(coords, dtype=np.float64)
        with self.session():
            if self._shared_pass():
                per_split = self._evaluate_shared(coords, should_stop)
            else:
                per_split = [ev.evaluate(coords, should_stop=should_stop) for ev in self.splits.values()]
        return np.concatenate([per_split[0][:, :1], *per_split], axis=1)

    def _evaluate_shared(self, coords: np.ndarray, should_stop) -> list[np.ndarray]:
        perturber = self.primary.perturber
        all_c = torch.as_tensor(coords, dtype=perturber.base.dtype, device=self.device)
        rows: list[list[torch.Tensor]] = [[] for _ in self.splits]
        with torch.no_grad(), self.primary._precision():  # on a GPU: fp32 convolutions, cuDNN's algorithm search
            for c in all_c:
                if should_stop is not None and should_stop():
                    raise Cancelled()
                perturber.set(c)  # once per point: every split reads these weights
                for k, ev in enumerate(self.splits.values()):
                    if ev.perturber is not perturber:  # a shared first layer reads its own perturber's
                        ev.perturber.coeffs.copy_(perturber.coeffs)  # coefficients, not the weights
                    rows[k].append(ev.point_values()[None, :])
        return [ev.with_exact_fractions(torch.cat(r).cpu().numpy()) for ev, r in zip(self.splits.values(), rows)]


__all__ = ["SplitEvaluator", "split_names", "column_names"]
