"""Bundled data sets for the zoo: small, offline, deterministic.

Digits are sklearn's ``load_digits`` (1,797 8×8 images shipped with sklearn), the
moons are sklearn's ``make_moons``; neither downloads anything.
"""
from __future__ import annotations

import numpy as np
import torch

Split = tuple[torch.Tensor, torch.Tensor]
"""``(inputs, targets)``: float32 inputs and int64 class indices."""

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def digits(flat: bool = False) -> tuple[Split, Split]:
    """``(train, test)`` of sklearn's 8×8 digits, scaled to [0, 1], 10 classes.

    Inputs are ``(N, 64)`` when ``flat`` (for MLPs), else ``(N, 1, 8, 8)`` (for
    image models). The 80/20 split is stratified and fixed: 1,437 train, 360 test.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    inputs = bunch.data.astype(np.float32) / 16.0
    if not flat:
        inputs = inputs.reshape(-1, 1, 8, 8)
    return _split(inputs, bunch.target)


def moons(n_samples: int = 1000, noise: float = 0.15) -> tuple[Split, Split]:
    """``(train, test)`` of sklearn's two interleaving half circles, ``(N, 2)`` inputs."""
    from sklearn.datasets import make_moons

    inputs, targets = make_moons(n_samples=n_samples, noise=noise, random_state=SPLIT_SEED)
    return _split(inputs.astype(np.float32), targets)


def _split(inputs: np.ndarray, targets: np.ndarray) -> tuple[Split, Split]:
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(
        inputs, targets, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=targets
    )
    return _tensors(x_train, y_train), _tensors(x_test, y_test)


def _tensors(inputs: np.ndarray, targets: np.ndarray) -> Split:
    return (
        torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(targets, dtype=np.int64)),
    )
