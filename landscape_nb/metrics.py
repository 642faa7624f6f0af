"""Metrics evaluated next to the loss: built-ins, name resolution, and unpacking value rows."""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from .errors import LandscapeError


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Fraction of argmax predictions equal to integer targets (or to argmax of one-hot targets)."""
    if targets.ndim == outputs.ndim:
        targets = targets.argmax(dim=-1)
    return (outputs.argmax(dim=-1) == targets).float().mean()


BUILTIN_METRICS: dict[str, Callable] = {"accuracy": accuracy}


def loss_name(loss_fn) -> str:
    if loss_fn is None:
        return "cross_entropy"
    name = getattr(loss_fn, "__qualname__", None) or type(loss_fn).__qualname__
    return f"{getattr(loss_fn, '__module__', '') or type(loss_fn).__module__}.{name}"


def resolve_metrics(metrics, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, Callable]:
    """``"auto"`` means accuracy for classification outputs (N, C>1) with integer targets."""
    if metrics == "auto":
        classify = outputs.ndim == 2 and outputs.shape[1] > 1 and not targets.is_floating_point()
        return {"accuracy": accuracy} if classify else {}
    if metrics is None:
        return {}
    if isinstance(metrics, str):
        metrics = [metrics]
    out: dict[str, Callable] = {}
    items = metrics.items() if isinstance(metrics, Mapping) else [(m, m) for m in metrics]
    for name, fn in items:
        if isinstance(fn, str):
            if fn not in BUILTIN_METRICS:
                raise LandscapeError(
                    f"unknown metric {fn!r}; expected one of {sorted(BUILTIN_METRICS)} or a mapping "
                    "name -> callable(outputs, targets) returning a scalar mean"
                )
            fn = BUILTIN_METRICS[fn]
        if not callable(fn):
            raise LandscapeError(f"metric {name!r} is {fn!r}; expected a callable(outputs, targets) -> scalar")
        out[str(name)] = fn
    return out


def split_values(values: np.ndarray, metric_names: Sequence[str]) -> dict[str, np.ndarray]:
    """``{"loss": values[..., 0], name_k: values[..., k]}`` for evaluator output whose last axis is
    the loss followed by the metrics in ``metric_names`` order (views, no copies)."""
    return {"loss": values[..., 0], **{m: values[..., k] for k, m in enumerate(metric_names, start=1)}}


__all__ = ["accuracy", "BUILTIN_METRICS", "loss_name", "resolve_metrics", "split_values"]
