"""The bundled examples. Each entry is a few lines delegating to one private builder.

A docstring's first line is the entry's description in ``zoo.list()``. Every entry trains on one
thread (``training.train``: the same weights in any process, in-process or on a Dask worker).
Accuracies and times were measured on a 2-core AMD EPYC with torch 2.13 (seed 0, and the seed ranges
of the deep ResNets; times from before training was held to one thread, with 2, on a lightly
loaded CPU, load average 1-2; shared with ~7 busy processes, ResNet-56/110 took 3-7 min); tests check each
digits model reaches at least 0.9 test accuracy and the moons model 0.95, except the
deep networks without skips, which are tested against their own bands
(tests/test_zoo_depth.py).
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Mapping

from torch import nn

from . import data, models
from ._registry import Registry
from .training import Recipe, Training

registry = Registry()

#: entries whose recipe leaves them near chance accuracy, as documented: that is their result (Li et al.'s
#: deepest network without skips), not a training to redo (``depth.depth_comparison`` says so)
DOES_NOT_LEARN = frozenset({"resnet110-noskip-digits"})

_CONV_TRAINING = Training("sgd", lr=0.05, batch_size=64, n_epochs=15, weight_decay=5e-4)
# ResNet-56/110: the same recipe at a lower learning rate, warmed up over 2 epochs. At 0.05
# ResNet-110 *with* skips reached only 0.81 in 15 epochs (still climbing). At 0.02 without
# warm-up it reached 0.54-0.97 depending on the seed and on the CPU's summation order (seed 0:
# 0.969 with 1 thread, 0.586 with 2 on an AMD EPYC): its first steps decide. With the warm-up
# (He et al. 2016 also start ResNet-110 low) seeds 0-7 all reach 0.953-0.983. Both twins of a
# depth share the recipe.
_DEEP_TRAINING = Training("sgd", lr=0.02, batch_size=64, n_epochs=15, weight_decay=5e-4, warmup_epochs=2)


@registry.register
def mlp_digits() -> Recipe:
    """MLP (64-128-64-10) on 8×8 digits, with a small- vs large-batch pair of minimizers.

    Test accuracy 0.967; trains in ~4 s. The minimizers (Keskar et al. 2017) start
    from the model's initial weights: "small-batch" is SGD with batch 16 for 20
    epochs, "large-batch" full-batch gradient descent (1,437 samples) for 500 steps.
    Both fit the training set; the large-batch one is much sharper (top Hessian
    eigenvalue of the training loss ~4 vs ~0.3).
    """
    return _digits_recipe(
        partial(models.MLP, 64, 10, widths=(128, 64)),
        Training("sgd", lr=0.05, batch_size=32, n_epochs=20),
        flat=True,
        minimizers={
            "small-batch": Training("sgd", lr=0.05, batch_size=16, n_epochs=20),
            "large-batch": Training("sgd", lr=0.2, batch_size=1437, n_epochs=500),
        },
    )


@registry.register
def cnn_digits() -> Recipe:
    """Small CNN (3 conv-BN-ReLU layers) on 8×8 digits.

    Test accuracy 0.994; trains in ~2 s.
    """
    return _digits_recipe(models.SmallCNN, _CONV_TRAINING)


@registry.register
def resnet20_digits() -> Recipe:
    """ResNet-20 (16/32/64 channels, BN) with skip connections on 8×8 digits.

    Test accuracy 0.986; trains in ~7 s. The smooth half of Li et al.'s comparison.
    """
    return _resnet20_digits(skip=True)


@registry.register
def resnet20_noskip_digits() -> Recipe:
    """ResNet-20 without skip connections on 8×8 digits (Li et al.'s contrast).

    Test accuracy 0.992; trains in ~7 s.
    """
    return _resnet20_digits(skip=False)


@registry.register
def resnet56_digits() -> Recipe:
    """ResNet-56 (9 blocks per stage, 16/32/64 channels, BN) with skip connections on 8×8 digits.

    Same family as ``resnet20-digits``, deeper, at learning rate 0.02: Li et al.'s middle
    depth. Test accuracy 0.986 (seeds 0-5: 0.978-0.989); trains in ~18 s (855k parameters).
    """
    return _resnet_digits(n_blocks=9, skip=True)


@registry.register
def resnet56_noskip_digits() -> Recipe:
    """ResNet-56 without skip connections on 8×8 digits (Li et al.'s contrast at depth 56).

    Trains badly, and that is the result: test accuracy 0.486 with the recipe that gives
    its twin 0.986 (Li et al.'s ResNet-56-noshort also trains worse). Unstable: seeds 0-7
    reach 0.21-0.60 (one thread), so its band is wide; trains in ~16 s.
    """
    return _resnet_digits(n_blocks=9, skip=False)


@registry.register
def resnet110_digits() -> Recipe:
    """ResNet-110 (18 blocks per stage, 16/32/64 channels, BN) with skip connections on 8×8 digits.

    Test accuracy 0.981 (seeds 0-7: 0.953-0.983); trains in ~34 s (1.73M parameters).
    """
    return _resnet_digits(n_blocks=18, skip=True)


@registry.register
def resnet110_noskip_digits() -> Recipe:
    """ResNet-110 without skip connections on 8×8 digits (Li et al.'s chaotic extreme).

    Does not learn, and that is the result: test accuracy 0.108 (chance is 0.1; it
    predicts nearly one class; seeds 0-2: 0.103-0.108) with the recipe that gives its twin
    0.981; trains in ~36 s. Its loss explodes away from the minimizer (up to 2.6e16 on the plane).
    """
    return _resnet_digits(n_blocks=18, skip=False)


@registry.register
def vit_digits() -> Recipe:
    """Tiny vision transformer (2×2 patches, dim 48, 2 layers) on 8×8 digits.

    Test accuracy 0.972; trains in ~8 s.
    """
    return _digits_recipe(
        partial(models.TinyViT, patch_size=2, dim=48, n_layers=2, n_heads=4),
        Training("adam", lr=2e-3, batch_size=32, n_epochs=20),
    )


@registry.register
def mlp_moons() -> Recipe:
    """MLP (2-32-32-2) on sklearn's two moons: 2D inputs, 2 classes.

    1,000 points with noise 0.15 (800 train, 200 test). Test accuracy 0.99; trains
    in under 1 s.
    """
    return Recipe(
        data=partial(data.moons, n_samples=1000, noise=0.15),
        model=partial(models.MLP, 2, 2, widths=(32, 32)),
        training=Training("sgd", lr=0.1, batch_size=32, n_epochs=20),
    )


def _resnet20_digits(skip: bool) -> Recipe:
    return _resnet_digits(n_blocks=3, skip=skip, training=_CONV_TRAINING)


def _resnet_digits(n_blocks: int, skip: bool, training: Training = _DEEP_TRAINING) -> Recipe:
    """CIFAR-style ResNet-(6·n_blocks + 2), 16/32/64 channels, on digits (Li et al. §6)."""
    model = partial(models.ResNet, n_blocks=n_blocks, widths=(16, 32, 64), skip=skip)
    return _digits_recipe(model, training)


def _digits_recipe(
    model: Callable[[], nn.Module],
    training: Training,
    flat: bool = False,
    minimizers: Mapping[str, Training] | None = None,
) -> Recipe:
    return Recipe(partial(data.digits, flat=flat), model, training, dict(minimizers or {}))
