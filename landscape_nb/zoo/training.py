"""Deterministic CPU training of zoo examples, recording the trajectory.

Randomness comes only from the recipe's seed: initial weights are drawn inside
``torch.random.fork_rng`` (the caller's global RNG is left untouched) and batches are
shuffled with an explicit ``torch.Generator``.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import inspect
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..errors import LandscapeError
from .data import Split

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Training:
    """How to optimize: optimizer, learning rate, batch size and number of epochs.

    The learning rate rises linearly from ``lr / 10`` over the first ``warmup_epochs``
    (Goyal et al. 2017, "gradual warmup"; none by default), then is cosine-decayed to 0
    over the remaining steps. Each epoch is one shuffled pass over the training set in
    ``n_train // batch_size`` full batches (the remainder is dropped)."""

    optimizer: str  # "sgd" (with momentum) or "adam"
    lr: float
    batch_size: int
    n_epochs: int
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup_epochs: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.warmup_epochs < self.n_epochs:
            raise LandscapeError(
                f"Got warmup_epochs={self.warmup_epochs} with n_epochs={self.n_epochs}; expected "
                "0 <= warmup_epochs < n_epochs. Fix the zoo entry's Training(warmup_epochs=...)."
            )


@dataclass(frozen=True)
class Recipe:
    """Everything that defines a zoo example's weights.

    ``data`` and ``model`` are ``functools.partial`` objects (or plain functions) so the
    recipe has a stable fingerprint; ``minimizers`` are extra models trained from the
    same initial weights with other settings (e.g. small vs large batch).
    """

    data: Callable[[], tuple[Split, Split]]
    model: Callable[[], nn.Module]
    training: Training
    minimizers: Mapping[str, Training] = field(default_factory=dict)
    seed: int = 0


@dataclass(frozen=True, eq=False)
class TrainedWeights:
    """What training produces and the cache stores.

    ``trajectory`` holds the state dict before training and after each epoch, so its
    last entry is the final model; ``test_accuracy`` is that model's, in eval mode.
    """

    trajectory: list[StateDict]
    minimizers: dict[str, StateDict]
    test_accuracy: float

    @property
    def final(self) -> StateDict:
        return self.trajectory[-1]


def initial_model(recipe: Recipe) -> nn.Module:
    """The recipe's architecture with its seeded initial weights (float32, CPU, eval mode)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = recipe.model()
    return model.to(device="cpu", dtype=torch.float32).eval()


def train(recipe: Recipe, train_split: Split, test_split: Split) -> TrainedWeights:
    """Train the recipe's model (and its minimizers) from the same initial weights, on one intra-op thread.

    The number of threads changes the order of the sums in a convolution's backward pass, and the deep
    networks' first steps decide where they end: ResNet-56-noskip reached 0.628 trained in a 2-thread process
    and 0.486 on a one-thread Dask worker (``train_on_workers``, the demo's and the notebook's), so the README's
    numbers held for one way of training only (trial s55). One thread gives every process the same weights on
    the same CPU and torch build, whatever its core count, at about 1/8 more time on 2 cores."""
    with _one_thread():
        return _train(recipe, train_split, test_split)


_THREADS_LOCK = threading.Lock()
_TRAINING = [0, None]  # trainings under way in this process, and the thread count before the first


@contextlib.contextmanager
def _one_thread():
    """torch's intra-op threads at 1 while any training of this process runs (two trainings in threads of one
    process restore the count before the first, not each other's 1)."""
    with _THREADS_LOCK:
        if _TRAINING[0] == 0:
            _TRAINING[1] = torch.get_num_threads()
            torch.set_num_threads(1)
        _TRAINING[0] += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _TRAINING[0] -= 1
            if _TRAINING[0] == 0:
                torch.set_num_threads(_TRAINING[1])


def _train(recipe: Recipe, train_split: Split, test_split: Split) -> TrainedWeights:
    model = initial_model(recipe)
    init = _clone(model.state_dict())
    trajectory = [init]
    record = lambda m: trajectory.append(_clone(m.state_dict()))  # noqa: E731
    _fit(model, train_split, recipe.training, recipe.seed, record)
    minimizers = {}
    for name, training in recipe.minimizers.items():
        minimizer = initial_model(recipe)
        minimizer.load_state_dict(init)
        _fit(minimizer, train_split, training, recipe.seed, lambda m: None)
        minimizers[name] = _clone(minimizer.state_dict())
    return TrainedWeights(trajectory, minimizers, accuracy_of(model.eval(), test_split))


def accuracy_of(model: nn.Module, split: Split) -> float:
    """Fraction of ``split`` that ``model`` classifies correctly (one pass, no grad)."""
    inputs, targets = split
    with torch.no_grad():
        predicted = model(inputs).argmax(dim=1)
    return int((predicted == targets).sum()) / len(targets)


def _fit(
    model: nn.Module,
    split: Split,
    training: Training,
    seed: int,
    on_epoch: Callable[[nn.Module], None],
) -> None:
    inputs, targets = split
    n_samples = len(targets)
    batch_size = min(training.batch_size, n_samples)
    n_batches = n_samples // batch_size
    optimizer = _optimizer(model, training)
    scheduler = _schedule(optimizer, n_batches * training.n_epochs, n_batches * training.warmup_epochs)
    generator = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(training.n_epochs):
        model.train()
        order = torch.randperm(n_samples, generator=generator)
        for i_batch in range(n_batches):
            batch = order[i_batch * batch_size : (i_batch + 1) * batch_size]
            loss = loss_fn(model(inputs[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        on_epoch(model)


def _schedule(optimizer: torch.optim.Optimizer, n_steps: int, n_warmup: int) -> torch.optim.lr_scheduler.LRScheduler:
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=n_steps - n_warmup)
    if n_warmup == 0:
        return cosine
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=n_warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[n_warmup])


def _optimizer(model: nn.Module, training: Training) -> torch.optim.Optimizer:
    params = model.parameters()
    if training.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=training.lr, momentum=training.momentum, weight_decay=training.weight_decay
        )
    if training.optimizer == "adam":
        return torch.optim.Adam(params, lr=training.lr, weight_decay=training.weight_decay)
    raise LandscapeError(
        f"Got optimizer {training.optimizer!r}; expected 'sgd' or 'adam'. "
        "Fix the zoo entry's Training(optimizer=...)."
    )


def _clone(state: Mapping[str, torch.Tensor]) -> StateDict:
    return {key: value.detach().clone() for key, value in state.items()}


def fingerprint(recipe: Recipe) -> str:
    """Hash of the recipe and of the code that turns it into weights.

    The source of the data, model and training modules is included, so editing an
    architecture or the training loop invalidates cached weights without a manual
    version bump.
    """
    description = {
        "recipe": _describe(recipe),
        "code": [_source(name) for name in ("data", "models", "training")],
    }
    text = json.dumps(description, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _describe(obj: Any) -> Any:
    if isinstance(obj, functools.partial):
        return {
            "func": _describe(obj.func),
            "args": _describe(obj.args),
            "kwargs": _describe(obj.keywords),
        }
    if isinstance(obj, (Recipe, Training)):
        return {"type": type(obj).__name__, **{k: _describe(v) for k, v in vars(obj).items()}}
    if isinstance(obj, Mapping):
        return {str(k): _describe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_describe(v) for v in obj]
    if callable(obj):
        return f"{obj.__module__}.{obj.__qualname__}"
    return obj


def _source(module_name: str) -> str:
    module = importlib.import_module(f"{__package__}.{module_name}")
    try:
        return inspect.getsource(module)
    except (OSError, TypeError):  # no source shipped (e.g. a zipped install)
        return getattr(module, "__file__", module_name) or module_name
