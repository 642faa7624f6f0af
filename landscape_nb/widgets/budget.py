"""What a grid costs and whether it fits a time budget: the check behind Compute's refusal.

``estimate_seconds_per_point`` times a few forward passes over the evaluation data;
``check_time_budget`` is pure arithmetic on that estimate, so a front end can refuse a
resolution that would take too long before it starts, and say which resolution fits.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from ..errors import LandscapeError

__all__ = ["BudgetSuggestion", "check_time_budget", "estimate_seconds_per_point"]

SUGGESTION_SHARE = 0.8  # of the budget a suggested resolution fills: the per-point estimate varies between runs


@dataclass(frozen=True)
class BudgetSuggestion:
    """A grid over its time budget: how long it would take, and how much would fit.

    Attributes
    ----------
    n_points, seconds_per_point, n_workers, budget
        The request, as given to `check_time_budget` (``n_workers`` at least 1).
    seconds : float
        The estimated wall time, ``n_points * seconds_per_point / n_workers``, in seconds.
    """

    n_points: int
    seconds_per_point: float
    n_workers: int
    budget: float
    seconds: float

    @property
    def points_in_budget(self) -> float:
        """How many grid points the budget allows."""
        return self.budget * self.n_workers / self.seconds_per_point

    def points_per_axis(self, ndim: int) -> int:
        """The resolution per axis of a line (``ndim=1``) or square plane that fits ``SUGGESTION_SHARE`` of the
        budget (the next Compute times its points anew: a suggestion filling the budget was refused in turn
        at 10.4 s of 10), odd (so that a symmetric range has the model at its centre, and the Explorer's
        sliders can take it), at least 3."""
        room = SUGGESTION_SHARE * self.points_in_budget
        k = int(room ** (1 / ndim))
        while (k + 1) ** ndim <= room:  # the float root may fall a hair short of a whole number
            k += 1
        return max(3, k if k % 2 else k - 1)

    def message(self, grid_text: str, ndim: int) -> str:
        """The refusal, e.g. for ``grid_text="201×201"``, with what to change."""
        return (
            f"{grid_text} = {self.n_points} points at about {self.seconds_per_point * 1e3:.3g} ms per point on "
            f"{self.n_workers} worker(s) would take about {self.seconds:.3g} s, over the time budget of "
            f"{self.budget:.3g} s; lower the resolution to about {self.points_per_axis(ndim)} points per axis, "
            "evaluate fewer samples (max samples), use more workers, or raise the time budget"
        )


def check_time_budget(n_points: int, seconds_per_point: float, n_workers: int,
                      budget: float) -> BudgetSuggestion | None:
    """Whether a grid fits a time budget; None if it does, else what would fit.

    Parameters
    ----------
    n_points : int
        Grid points to evaluate.
    seconds_per_point : float
        The cost of one point on one worker, in seconds (see `estimate_seconds_per_point`).
    n_workers : int
        Workers evaluating points in parallel; fewer than 1 counts as 1.
    budget : float
        The longest acceptable wall time, in seconds.

    Returns
    -------
    BudgetSuggestion or None
        None when ``n_points * seconds_per_point / n_workers <= budget``.

    Raises
    ------
    LandscapeError
        ``seconds_per_point`` or ``budget`` is not a positive number.
    """
    if not (seconds_per_point > 0 and budget > 0):
        raise LandscapeError(f"seconds_per_point={seconds_per_point!r}, budget={budget!r}; expected positive "
                             "numbers of seconds, e.g. from estimate_seconds_per_point(model, data)")
    n_workers = max(1, int(n_workers))
    seconds = n_points * seconds_per_point / n_workers
    if seconds <= budget:
        return None
    return BudgetSuggestion(int(n_points), float(seconds_per_point), n_workers, float(budget), seconds)


def estimate_seconds_per_point(model, data, max_samples: int | None = None, loss_fn=None) -> float:
    """A grid point's cost: the fastest of a few timed forward passes (and ``loss_fn``) over the evaluation data.

    Parameters
    ----------
    model : torch.nn.Module
        Run in eval mode (BatchNorm statistics are not updated) under ``torch.no_grad``, on
        the device of its parameters; its weights are not changed.
    data : (inputs, targets), Dataset, DataLoader or callable
        The evaluation data, as ``compute_surface`` takes it.
    max_samples : int, optional
        Time only this many samples (the fixed-seed subset ``compute_surface`` evaluates).
    loss_fn : callable (outputs, targets) -> loss, optional
        Timed too where given (a user's loss may cost more than the forward pass).

    Returns
    -------
    float
        Seconds for one pass over the (subset of the) data in batches of 1024, at least 1e-6.
        Up to five passes, stopping after about one second in all; the minimum ignores passes
        slowed down by other processes.
    """
    import torch

    from ..data import call_model, read_data, tree_map
    from ..params import eval_mode

    ev = read_data(data, max_samples=max_samples)  # any form compute_surface takes (pytrees, dict batches)
    with eval_mode(model):  # never update BN statistics here
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        batches = [[None if part is None else tree_map(lambda t: t.to(device), part) for part in ev.split(t)]
                   for t in ev.slices(1024)]

        def point(xb, yb):
            out = call_model(model, xb)
            return out if loss_fn is None or yb is None else loss_fn(out, yb)

        best, spent = float("inf"), 0.0
        with torch.no_grad():
            point(*[None if part is None else tree_map(lambda t: t[:8], part) for part in batches[0]])  # warm-up
            for _ in range(5):  # the minimum ignores a pass slowed down by other processes
                t0 = time.perf_counter()
                for xb, yb in batches:
                    point(xb, yb)
                dt = time.perf_counter() - t0
                best, spent = min(best, dt), spent + dt
                if spent > 1.0:
                    break
        return max(best, 1e-6)
