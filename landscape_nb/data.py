"""Evaluation data: any accepted form to two tensors, a fixed-seed subset, consecutive batches.

One adapter, ``as_tensors``, serves every module that takes ``data`` (the evaluator, the
Hessian, paths, the Explorer), so they all accept the same forms.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn

from .errors import LandscapeError


def as_tensors(data, what: str = "data") -> tuple[torch.Tensor, torch.Tensor]:
    """Accept ``(inputs, targets)``, a ``Dataset``, a ``DataLoader`` or a zero-argument
    callable returning one of those; return two tensors with a leading sample axis."""
    from torch.utils.data import DataLoader, Dataset, TensorDataset

    if callable(data) and not isinstance(data, (Dataset, DataLoader, nn.Module)):
        try:
            n_required = sum(
                p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                for p in inspect.signature(data).parameters.values()
            )
        except (TypeError, ValueError):
            n_required = 0
        if n_required:
            raise LandscapeError(
                f"{what} is a callable taking {n_required} required argument(s); expected a zero-argument "
                "factory returning (inputs, targets), a Dataset or a DataLoader"
            )
        data = data()
    if isinstance(data, DataLoader):
        batches = [tuple(b) for b in data]
        if not batches or len(batches[0]) < 2:
            raise LandscapeError(f"{what}: the DataLoader yields no (inputs, targets) batches")
        return _check_pair(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]), what)
    if isinstance(data, TensorDataset):
        return _check_pair(data.tensors[0], data.tensors[1], what)
    if isinstance(data, Dataset):
        items = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
        if not items:
            raise LandscapeError(f"{what}: the Dataset is empty")
        xs = torch.stack([torch.as_tensor(it[0]) for it in items])
        ys = torch.stack([torch.as_tensor(it[1]) for it in items])
        return _check_pair(xs, ys, what)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return _check_pair(torch.as_tensor(data[0]), torch.as_tensor(data[1]), what)
    raise LandscapeError(
        f"{what} of type {type(data).__name__}; expected (inputs, targets) tensors, a Dataset, a DataLoader "
        "or a zero-argument callable returning one of those"
    )


def _check_pair(x: torch.Tensor, y: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y) or len(x) == 0:
        raise LandscapeError(
            f"{what}: inputs of shape {tuple(x.shape)} and targets of shape {tuple(y.shape)}; expected the same "
            "non-zero number of samples along the first axis"
        )
    return x, y


def subset(x: torch.Tensor, y: torch.Tensor, max_samples: int | None, seed: int):
    if max_samples is None or max_samples >= len(x):
        return x, y
    if int(max_samples) < 1:
        raise LandscapeError(f"max_samples={max_samples}; expected a positive number of samples or None for all")
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(int(seed)))[: int(max_samples)]
    idx = idx.sort().values
    return x[idx], y[idx]


def batches(x: torch.Tensor, y: torch.Tensor | None = None, *, size: int) -> list:
    """Consecutive slices of ``size`` samples along the first axis: ``[(xb, yb), ...]``, or
    ``[xb, ...]`` when ``y`` is None. The last batch holds the remainder."""
    size = int(size)
    if size < 1:
        raise LandscapeError(f"batch size {size}; expected a positive number of samples per batch")
    starts = range(0, len(x), size)
    if y is None:
        return [x[i:i + size] for i in starts]
    return [(x[i:i + size], y[i:i + size]) for i in starts]


__all__ = ["as_tensors", "subset", "batches"]
