"""Evaluation data: any accepted form to one pytree of tensors, a fixed-seed subset, batches.

One reader, ``read_data``, serves every module that takes ``data`` (the evaluator, the
Hessian, paths, the Explorer), so they all accept the same forms. A batch is a *pytree*:
a tensor, a tuple/list or a dict of tensors (nested), every tensor leaf holding the samples
along dim 0. How inputs and targets are taken from it is one of four stated rules
(``EvalData.rule``), recorded in the provenance, never guessed silently:

``"pair"``
    ``(inputs, targets)``: a tuple or list of two; ``inputs`` a tensor (``model(x)``), a
    tuple/list (``model(*x)``) or a dict (``model(**x)``).
``"last"``
    A tuple of more than two tensors (``TensorDataset(a, b, y)``): the last is the
    targets, the others the positional inputs (``model(a, b)``).
``"key"``
    A dict holding ``target_key`` (default ``"labels"``): that entry is the targets, the
    rest the keyword inputs; with no ``loss_fn`` and a model returning its own ``.loss``
    when given the whole dict (Hugging Face), that loss is used.
``"inputs"``
    Anything else (a tensor, a dict without the default ``target_key`` ``"labels"``): inputs
    only, no targets; the model must return its own ``.loss``. A ``target_key`` named on
    purpose and missing from a dict is refused.
"""
from __future__ import annotations

import inspect
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .errors import LandscapeError, is_int, one_line, user_frame, warn_user
from .trees import likely_target_key, tree_leaves, tree_map

RULES = ("pair", "last", "key", "inputs")


# ---------------------------------------------------------------- pytrees ----

#: key of ``provenance["data"]``: the data hold NaN or inf that the model or loss leaves out (warned by
#: ``compute_surface``)
NON_FINITE_DATA = "non-finite data"


def non_finite_leaves(tree) -> list[tuple[str, int]]:
    """``(path, count)`` of each floating-point leaf of ``tree`` holding NaN or inf values."""
    return [(path, int((~torch.isfinite(leaf)).sum())) for path, leaf in tree_leaves(tree)
            if leaf.is_floating_point() and not bool(torch.isfinite(leaf).all())]


def check_finite_data(tree, what: str = "the data", why: str = "the loss would be NaN at every point") -> None:
    """Refuse NaN or inf in any floating-point leaf of ``tree``: the loss, and everything computed from it,
    would be NaN (or an eigensolver would fail on it) with no sign of which sample caused it.

    Raises
    ------
    LandscapeError
        Naming the leaf (``what`` and its path), how many values are not finite, and ``why`` it matters.
    """
    for path, n in non_finite_leaves(tree)[:1]:
        raise LandscapeError(f"{what}{path} hold {n} non-finite value(s) (NaN or inf); expected finite data: {why} "
                             "(clean or drop those samples)")


def tree_structure(tree) -> str:
    """The shape of a tree without its values, e.g. ``"({'input_ids': T, 'labels': T})"``."""
    if isinstance(tree, torch.Tensor):
        return "T"
    if isinstance(tree, Mapping):
        return "{" + ", ".join(f"{k!r}: {tree_structure(v)}" for k, v in tree.items()) + "}"
    if isinstance(tree, (tuple, list)):
        inner = ", ".join(tree_structure(v) for v in tree)
        return f"({inner})" if isinstance(tree, tuple) else f"[{inner}]"
    return type(tree).__name__


def _tensorize(tree, what: str, path: str = ""):
    """Every leaf as a tensor (numbers, numpy arrays); refuse leaves that cannot be one (strings)."""
    if isinstance(tree, torch.Tensor):
        return tree
    if isinstance(tree, Mapping):
        return {k: _tensorize(v, what, f"{path}[{k!r}]") for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(_tensorize(v, what, f"{path}[{i}]") for i, v in enumerate(tree)))
    if isinstance(tree, (tuple, list)):
        if tree and all(isinstance(v, (int, float, bool)) for v in tree):
            return torch.as_tensor(tree)
        return type(tree)(_tensorize(v, what, f"{path}[{i}]") for i, v in enumerate(tree))
    try:
        return torch.as_tensor(tree)
    except (TypeError, ValueError, RuntimeError):
        raise LandscapeError(
            f"{what}: the entry {path or 'data'} is a {type(tree).__name__}, which is not a tensor; expected "
            "tensors (or numbers/arrays) in every entry: drop or encode it (e.g. tokenize text, "
            "remove_columns), or set the dataset's format to torch"
        ) from None


def batch_len(tree) -> int:
    """Number of samples of a tree (length of its first tensor leaf along dim 0)."""
    if isinstance(tree, torch.Tensor):  # the common case, on the per-batch path
        return int(tree.shape[0])
    leaves = tree_leaves(tree)
    return int(leaves[0][1].shape[0]) if leaves else 0


def call_model(model: Callable, inputs):
    """``model(x)`` for a tensor, ``model(*x)`` for a tuple/list, ``model(**x)`` for a dict."""
    if isinstance(inputs, torch.Tensor):  # the common case first: no ABC check per batch
        return model(inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def args_kwargs(inputs) -> tuple[tuple, dict]:
    """``(args, kwargs)`` of ``call_model(model, inputs)`` (for ``torch.func.functional_call``)."""
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    return (inputs,), {}


# ------------------------------------------------------------ evaluation data ----

@dataclass
class EvalData:
    """The evaluation samples as one pytree of tensors (samples along dim 0 of every leaf).

    Attributes
    ----------
    tree : tensor, tuple, list or dict
        All samples; every tensor leaf has ``n`` rows.
    rule : {"pair", "last", "key", "inputs"}
        How inputs and targets are taken from the tree (see the module docstring).
    target_key : str or None
        The dict key of the targets for ``rule == "key"``.
    notes : dict
        What was read and how (for the provenance): source, rule, subset.
    collated_alone : list of (int, tree)
        For a DataLoader whose ``collate_fn`` pads each batch to its longest sample: up to
        ``PADDING_SAMPLES`` samples as ``collate_fn([sample])`` gives them (other shapes than
        their rows of ``tree``, which is collated all at once), with their row in ``tree``;
        ``evaluate.check_padding`` compares the model's loss on both. Empty otherwise.
    """

    tree: Any
    rule: str
    target_key: Any = None
    notes: dict = field(default_factory=dict)
    collated_alone: list = field(default_factory=list, repr=False)

    def __post_init__(self):
        leaves = tree_leaves(self.tree)
        if not leaves:
            raise LandscapeError("the data hold no tensors; expected (inputs, targets) tensors, a Dataset or a DataLoader")
        ns = {tuple(t.shape[:1]) for _, t in leaves}
        if any(t.ndim == 0 for _, t in leaves) or len(ns) != 1 or leaves[0][1].shape[0] == 0:
            shapes = ", ".join(f"{p or 'data'}: {tuple(t.shape)}" for p, t in leaves[:6])
            raise LandscapeError(
                f"the data hold tensors of shapes {shapes}; expected the same non-zero number of samples "
                f"along the first axis of every tensor{records_hint(self.tree)}"
            )

    @property
    def n(self) -> int:
        return batch_len(self.tree)

    @property
    def keys(self) -> list | None:
        """The keys of dict batches (named where no targets were found among them), else None."""
        return list(self.tree) if isinstance(self.tree, Mapping) else None

    def split(self, tree=None) -> tuple[Any, torch.Tensor | None]:
        """``(inputs, targets)`` of ``tree`` (default all samples); targets None for rule ``"inputs"``."""
        tree = self.tree if tree is None else tree
        if self.rule == "pair":
            return tree[0], tree[1]
        if self.rule == "last":
            return tuple(tree[:-1]), tree[-1]
        if self.rule == "key":
            return {k: v for k, v in tree.items() if k != self.target_key}, tree[self.target_key]
        return tree, None

    @property
    def inputs(self):
        return self.split()[0]

    @property
    def targets(self) -> torch.Tensor | None:
        return self.split()[1]

    def take(self, idx: torch.Tensor) -> "EvalData":
        """The samples at ``idx`` (a 1-D index tensor), same rule."""
        rows = {int(r): k for k, r in enumerate(idx.tolist())}
        alone = [(rows[r], t) for r, t in self.collated_alone if r in rows]
        return EvalData(tree_map(lambda t: t[idx], self.tree), self.rule, self.target_key, dict(self.notes), alone)

    def to(self, device) -> "EvalData":
        """On ``device``; tensors made under ``torch.inference_mode()`` copied to plain ones, which autograd can
        save for a Hessian's backward (the model was blamed for "Inference tensors cannot be saved", trial s36)."""
        def move(t):
            t = t.to(device)
            return t.clone() if t.is_inference() and not torch.is_inference_mode_enabled() else t

        alone = [(r, tree_map(move, a)) for r, a in self.collated_alone]
        return EvalData(tree_map(move, self.tree), self.rule, self.target_key, dict(self.notes), alone)

    def slices(self, size: int) -> list:
        """Consecutive sub-trees of ``size`` samples (the last holds the remainder)."""
        size = int(size)
        if size < 1:
            raise LandscapeError(f"batch size {size}; expected a positive number of samples per batch")
        return [tree_map(lambda t, i=i: t[i:i + size], self.tree) for i in range(0, self.n, size)]


def keywords_hint(xb, rule: str, target_key, model=None) -> str:
    """A hint when the model was called with every key of dict batches that hold no targets entry (``rule``
    "inputs"): a key the model's forward does not take is likely the targets under another name; or when
    the model's forward takes one argument (``forward(self, batch)``), not the dict's keys; else ""."""
    if not isinstance(xb, Mapping):
        return ""
    if rule == "inputs":
        likely = likely_target_key(xb)
        return (f"; the dict has no targets entry (target_key={target_key!r}), so all of {list(xb)} went to the "
                "model as keywords: name the targets with target_key=" + (repr(likely) if likely else ""))
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (AttributeError, TypeError, ValueError):
        return ""
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if (len(positional) == 1 and positional[0].name not in xb
            and not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params)):
        return (f"; {type(model).__name__}.forward takes one argument ({positional[0].name}), and a dict of inputs "
                f"goes to it as keywords ({', '.join(map(str, list(xb)[:4]))}): to pass the dict whole, give the "
                "data as ((inputs_dict,), targets), e.g. data=(({'x': x},), y)")
    return ""


def order_hint(xb, yb, rule: str, target_key, model, exc: BaseException) -> str:
    """A hint when the model's error ``exc`` on tuple batches read as (inputs, targets) (``rule`` "pair" or
    "last", no integer ``target_key``) may come from batches given targets first: the element at an inputs
    position is integer while the targets are floating and the error is about dtypes, or the targets'
    per-sample shape fits the model's first layer where that element's does not; else "". Batches of
    (targets, inputs) gave torch's bare "mat1 and mat2 must have the same dtype, but got Long and Float"."""
    if rule not in ("pair", "last") or is_int(target_key) or not isinstance(yb, torch.Tensor) or yb.dim() < 2:
        return ""  # a number per sample is no model's inputs (a re-trial's model lacking its embedding, s36)
    embeds = any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in (
        model.modules() if isinstance(model, nn.Module) else ()))  # integer inputs are its own: no dtype swap
    inputs = [xb] if rule == "pair" else list(xb)
    dtype_error = re.search(r"\b(dtype|scalar type|long|int|float|double)\b", str(exc).lower()) is not None
    for j, t in enumerate(inputs):
        if not isinstance(t, torch.Tensor):
            continue
        swapped_dtype = (not (t.is_floating_point() or t.is_complex()) and yb.is_floating_point() and dtype_error
                         and not embeds)
        if swapped_dtype or (_fits_first_layer(model, yb) and not _fits_first_layer(model, t)):
            return (f"; your batches may be (targets, inputs): the model got the {_kind(t)} per sample at position "
                    f"{j} of each batch, while the {_kind(yb)} at position {len(inputs)} (read as the targets) looks "
                    f"like its inputs: pass target_key={j} (the targets' position in the batches)")
    return ""


def _kind(t: torch.Tensor) -> str:
    return f"{str(t.dtype).replace('torch.', '')} tensor of shape {tuple(t.shape[1:])}"


def _fits_first_layer(model, t: torch.Tensor) -> bool:
    """Whether the batch ``t`` (N, ...) fits the first ``nn.Linear`` or convolution of ``model`` (its input
    features or channels); False where there is none."""
    modules = model.modules() if isinstance(model, nn.Module) else ()
    first = next((m for m in modules if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))), None)
    if isinstance(first, nn.Linear):
        return t.dim() >= 2 and t.shape[-1] == first.in_features
    if first is not None:
        return t.dim() == len(first.kernel_size) + 2 and t.shape[1] == first.in_channels
    return False


def dtype_hint(xb, model, exc: BaseException) -> str:
    """A hint when the model's error ``exc`` is about dtypes and floating-point inputs are of another dtype
    than its weights (float32 inputs to a float64 model: torch says "mat1 and mat2 must have the same
    dtype"), or integer ones where it names an integer type ("... got Long and Float"), else ""."""
    text = str(exc).lower()  # "mat1 and mat2 must have the same dtype", "Input type (double) and bias type (float)"
    if not any(word in text for word in ("dtype", "scalar type", "double", "float", "half", "bfloat16")):
        return ""
    weights = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    if weights is None:
        return ""
    given = sorted({str(t.dtype).replace("torch.", "") for _, t in tree_leaves(xb)
                    if t.is_floating_point() and t.dtype != weights})
    want = str(weights).replace("torch.", "")
    integers = sorted({str(t.dtype).replace("torch.", "") for _, t in tree_leaves(xb)
                       if not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool})
    # (X * 10).long() (trial s53); uint8 images, torch's "Byte" (trial s59)
    if not given and integers and any(word in text for word in ("long", "int", "byte", "char", "short")):
        image = ", scaled as the model saw them in training: uint8 images often / 255" if "uint8" in integers else ""
        return (f"; the inputs are {' and '.join(integers)} and the model's weights {want}: give floating-point "
                f"inputs (e.g. x.to(torch.{want}){image}); integer inputs are for an nn.Embedding's token ids")
    if not given:
        return ""
    return (f"; the inputs are {' and '.join(given)} and the model's weights {want}: give inputs of the "
            f"model's dtype (e.g. x.to(torch.{want})) or convert the model (e.g. model.to(torch.{given[0]}))")


def records_hint(tree) -> str:
    """A hint when ``tree`` looks like a list of samples or batches, (input, target) tuples or dicts of
    the same keys (it reads as one structure whose elements are those records), else ""."""
    if not (isinstance(tree, (tuple, list)) and len(tree) >= 2):
        return ""
    if (isinstance(tree[0], (tuple, list)) and len(tree[0]) >= 2
            and all(isinstance(e, (tuple, list)) and len(e) == len(tree[0]) for e in tree)):
        return (f" (a list of {len(tree)} (inputs, targets) samples or batches? it reads as one structure with "
                f"{len(tree)} elements: stack the samples, e.g. (torch.stack(xs), torch.stack(ys)), torch.cat the "
                "batches, or pass a Dataset or DataLoader)")
    if isinstance(tree[0], Mapping) and all(isinstance(e, Mapping) and e.keys() == tree[0].keys() for e in tree):
        return (f" (a list of {len(tree)} dict samples or batches? it reads as one structure with {len(tree)} "
                "elements: stack each key, e.g. {k: torch.stack([s[k] for s in samples]) for k in samples[0]}, "
                "torch.cat the batches, or pass a Dataset or DataLoader)")
    return ""


def _rule_of(tree, target_key, targets_needed: bool = True) -> tuple[str, Any]:
    """Which rule a read tree follows (see the module docstring)."""
    if isinstance(tree, (tuple, list)) and not hasattr(tree, "_fields"):
        if len(tree) == 2:
            return "pair", None
        if len(tree) > 2 and all(isinstance(t, torch.Tensor) for t in tree):
            return "last", None
    if isinstance(tree, Mapping) and target_key is not None and target_key in tree:
        return "key", target_key
    if isinstance(tree, Mapping) and isinstance(target_key, str) and target_key != "labels" and targets_needed:
        likely = likely_target_key(tree)
        raise LandscapeError(  # a key named on purpose: not a model's own loss, which the default falls back to
            f"target_key={target_key!r}, but the dict batches hold the keys {list(tree)}; expected the key of the "
            "targets among them" + (f", e.g. target_key={likely!r}" if likely else "")
            + " (or target_key=None for a model that computes its own loss from the whole batch)")
    return "inputs", None


_RULE_TEXT = {
    "pair": "targets: the second element of (inputs, targets)",
    "last": "targets: the last of {k} tensors; inputs: the {m} before it, as model(*inputs)",
    "key": "targets: the dict entry {key!r}; inputs: the other entries, as model(**inputs)",
    "inputs": "no targets: the model's own outputs.loss",
}


def subset_indices(n: int, max_samples: int | None, seed: int) -> torch.Tensor | None:
    """Sorted indices of a fixed-seed subset of ``max_samples`` of ``n`` samples (None: all)."""
    if max_samples is None or max_samples >= n:
        return None
    if int(max_samples) < 1:
        raise LandscapeError(f"max_samples={max_samples}; expected a positive number of samples or None for all")
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[: int(max_samples)]
    return idx.sort().values


def read_data(data, what: str = "data", *, max_samples: int | None = None, subset_seed: int = 0,
              target_key: str | int | None = "labels", targets_needed: bool = True) -> EvalData:
    """Read evaluation data into one ``EvalData`` (a pytree of tensors in memory).

    Parameters
    ----------
    data : tensors, tuple/list/dict of tensors, Dataset, DataLoader or zero-argument callable
        ``(inputs, targets)``, ``(a, b, ..., targets)``, a dict with ``target_key``, a map-style or
        iterable ``Dataset``, a ``DataLoader`` over one, or a factory returning one of those.
    what : str
        The argument's name in error messages.
    max_samples : int, optional
        A fixed-seed subset of this many samples: indices ``sorted(randperm(n, seed)[:max_samples])``.
    subset_seed : int
        The subset's seed.
    target_key : str or int or None
        The targets' dict key (default ``"labels"``), or for tuples of more than two tensors the
        index of the targets (default: the last); None: a dict has no targets.
    targets_needed : bool
        False for data read for its inputs only (``bn_data``): a dict without ``target_key`` is then
        inputs, not refused.

    Returns
    -------
    EvalData
        All (or the subset's) samples as tensors on the CPU (or where they were), with the rule
        and a note of what was read in ``notes``.

    Raises
    ------
    LandscapeError
        Data of no accepted form, entries that are not tensors, leaves of different sample counts,
        an empty dataset, a ``target_key`` other than ``"labels"`` missing from dict batches.

    Notes
    -----
    Memory: the result holds the selected samples once (``max_samples`` of them, or all).
    A map-style ``Dataset`` (also inside a ``DataLoader``) is read in index order whatever the
    loader's sampler, so a shuffled loader gives the same samples on every call; with
    ``max_samples`` the indices are chosen before any item is read and only those items are
    read (peak: the items as Python objects plus the collated tensors, about twice the subset).
    A sampler other than ``SequentialSampler``/``RandomSampler`` over the whole dataset (e.g.
    ``SubsetRandomSampler``) selects which indices, read in sorted order; so does a ``batch_sampler=``
    (a ``BatchSampler`` through its sampler, another batch sampler by the indices of one pass of its
    batches). Each sample the sampler can select is evaluated once, so that every grid point (and a
    rerun) sees the same samples: where a loop over the loader would see others (a sampler drawing with
    replacement, ``RandomSampler(num_samples=k)`` drawing k of them at random, a
    ``WeightedRandomSampler``, whose weights are not applied: each sample of positive weight counts once,
    or ``drop_last=True`` leaving out a last short batch) a ``UserWarning`` says how, and so does
    ``notes["differs_from_loader"]``. An iterable dataset is read in the order it
    yields and reading stops after ``max_samples`` samples (the first ones, not a random subset: warned, and
    in ``notes["subset"]``).

    Raises
    ------
    LandscapeError
        For data of no form above, and for an exception raised while reading them (the factory, a
        ``Dataset``'s ``__getitem__``/``__iter__``, a ``collate_fn``): named as the data's, with the original
        chained as ``__cause__`` (it read as the model's: "the model, loss_fn or a metric raised OSError",
        trial s34).
    """
    try:
        return _read_data(data, what, max_samples=max_samples, subset_seed=subset_seed, target_key=target_key,
                          targets_needed=targets_needed)
    except LandscapeError:
        raise
    except Exception as exc:  # the user's data code: said as such, chained
        if "daemonic processes are not allowed to have children" in str(exc):  # a DataLoader's workers, read
            raise LandscapeError(  # where it cannot start them (a Dask worker is a daemon: blamed on the data, s35)
                f"reading the {what} needs processes for its DataLoader's num_workers="
                f"{getattr(data, 'num_workers', '?')}, which a Dask worker (a daemon process) cannot start; the data "
                "themselves are fine: pass a DataLoader with num_workers=0, or read the data in this process "
                "(client=None)") from exc
        source = (f"the function {getattr(data, '__qualname__', type(data).__name__)}() returning it"
                  if callable(data) and not hasattr(data, "__getitem__") and not hasattr(data, "__iter__") else
                  f"its {type(data).__name__} (__getitem__, __iter__ or a collate_fn)")
        raise LandscapeError(f"reading the {what} raised {type(exc).__name__}: {one_line(exc)}{user_frame(exc)} "
                             f"(in {source}; the error is in the data, before the model ran){_read_where(exc)}; the "
                             "original exception is chained as __cause__") from exc


def _read_where(exc: BaseException) -> str:
    """For a file not found by a relative path on a Dask worker: where that ran, and in which folder (a trial's
    data function read "data.pt" on workers started in /tmp, told only that no such file was there, s59)."""
    import os

    name = getattr(exc, "filename", None)
    if not isinstance(exc, FileNotFoundError) or not isinstance(name, (str, os.PathLike)) or os.path.isabs(name):
        return ""
    try:
        from distributed import get_worker

        address = get_worker().address
    except (ImportError, ValueError):  # not on a Dask worker: the path is this process's own
        return ""
    return (f"; it ran on the Dask worker at {address}, whose working directory is {os.getcwd()}: give the "
            "function an absolute path, or start the workers in the data's folder")


def _read_data(data, what: str, *, max_samples: int | None, subset_seed: int, target_key, targets_needed: bool):
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    data = _call_factory(data, what)
    _refuse_named_splits(data, what)
    notes: dict[str, Any] = {}
    alone: list = []
    if isinstance(data, DataLoader):
        tree, notes, alone = _read_loader(data, what, max_samples, subset_seed)
        max_samples = None  # already applied
        batching = (f"batch_size={data.batch_size}" if data.batch_size is not None else
                    f"batch sampler {type(data.batch_sampler).__name__}" if data.batch_sampler is not None else None)
        if batching is not None:
            notes = {**notes, "loader_batch_size": (
                f"the DataLoader's {batching} is not used: its samples are evaluated in "
                "batches of the evaluation's batch_size (tuned unless given; a model mixing samples across a "
                "batch depends on it)"
                + (", and drop_last=True is not either: every sample is evaluated" if data.drop_last else ""))}
    elif isinstance(data, IterableDataset):
        tree, notes = _read_iterable(data, _collate, what, max_samples), {"source": "IterableDataset"}
        _note_first_of_stream(notes, tree, max_samples, type(data).__name__)
        random_note = _recollatable(tree) and _random_stream(lambda: _read_iterable(data, _collate, what, max_samples),
                                                             tree, type(data).__name__)
        if random_note:
            notes[RANDOM_ITEMS_NOTE] = random_note
        max_samples = None
    elif isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(
            data, (tuple, list, Mapping, torch.Tensor, str, bytes)) and not hasattr(data, "__array__")):
        # map-style: a torch Dataset, or anything indexable with a length (e.g. a Hugging Face
        # ``datasets.Dataset`` with ``set_format("torch")``)
        tree, notes, _ = _read_map(data, None, _collate, what, max_samples, subset_seed)
        max_samples = None
    elif isinstance(data, (tuple, list, Mapping, torch.Tensor)) or hasattr(data, "__array__"):
        tree = _tensorize(data, what)
        notes = {"source": type(data).__name__}
    else:
        raise LandscapeError(
            f"{what} of type {type(data).__name__}; expected (inputs, targets) tensors, a dict of tensors, "
            "a Dataset, a DataLoader or a zero-argument callable returning one of those"
        )
    k = _target_index(tree, target_key, what, targets_needed)
    if k is not None:

        def targets_last(t: tuple) -> tuple:  # rule "last"
            return (*t[:k], *t[k + 1:], t[k])

        tree, alone = targets_last(tree), [(r, targets_last(t)) for r, t in alone]
    rule, key = _rule_of(tree, None if is_int(target_key) else target_key, targets_needed)
    ev = EvalData(tree, rule, key, collated_alone=alone)
    idx = subset_indices(ev.n, max_samples, subset_seed)
    if idx is not None:
        notes["subset"] = f"{idx.numel()} of {ev.n} samples, seed {subset_seed}"
        ev = ev.take(idx)
    warn_differs_from_loader(notes)
    leaves = tree_leaves(tree)
    text = _RULE_TEXT[rule].format(k=len(tree) if isinstance(tree, tuple) else 0,
                                   m=len(tree) - 1 if isinstance(tree, tuple) else 0, key=key)
    ev.notes = {**notes, "rule": rule, "targets": text, "structure": tree_structure(tree),
                "n_leaves": len(leaves)}
    return ev


def _target_index(tree, target_key, what: str, targets_needed: bool) -> int | None:
    """The position an integer ``target_key`` names in tuple samples, from 0 (None for a key that is not an
    integer, or samples with no targets to find in ``bn_data``); `LandscapeError` out of range or for samples
    that are no tuples (an index past a pair, or 0 of one, was ignored: the second element stood as targets)."""
    if not is_int(target_key):  # numpy's integers too
        return None
    target_key = int(target_key)
    n = len(tree) if isinstance(tree, (tuple, list)) and not hasattr(tree, "_fields") else 0
    if n >= 2 and -n <= target_key < n:
        return target_key % n
    if n < 2 and not targets_needed:
        return None
    given = (f"tuples of {n}, so expected a position from {-n} to {n - 1}" if n >= 2 else
             f"{tree_structure(tree)}, not tuples, so a position names nothing")
    raise LandscapeError(f"target_key={target_key} (the targets' position in tuple samples), but the {what}'s samples "
                         f"are {given}; pass the targets' position (e.g. target_key=-1 for the last), the key of "
                         "dict samples' targets, or leave target_key out for (inputs, targets)")


def _note_first_of_stream(notes: dict, tree, max_samples: int | None, source: str) -> None:
    """Say (a warning, ``notes["subset"]``) that ``max_samples`` of a stream are its first ones, where it held at
    least that many: not the fixed-seed random subset a map-style set gives (a class-sorted stream's first 100
    had accuracy 0.93 for 0.95, with no word: trial s34)."""
    if max_samples is None or batch_len(tree) < max_samples:
        return
    notes["subset"] = first = (
        f"the first {max_samples} samples the {source} yields (a stream is not subsampled at random: one sorted by "
        "class gives a biased subset; shuffle it, or pass a map-style Dataset)")
    warn_user(f"landscape_nb: max_samples={max_samples} on a stream takes {first}")


def _refuse_named_splits(data, what: str) -> None:
    """Named splits (``{"train": (x, y), "test": (x, y)}``) read as one data set reach only the functions
    that take one (``auto_range``, the Hessian functions, ``bezier_curve``, ...): say so, rather than let the
    split names go to the model as keyword arguments. ``compute_surface`` reads each split on its own."""
    from torch.utils.data import DataLoader, Dataset

    if isinstance(data, Mapping) and data and all(isinstance(v, (tuple, Dataset, DataLoader)) for v in data.values()):
        raise LandscapeError(
            f"{what} with named splits {list(data)}; expected one data set here (named splits are for "
            f"compute_surface and the figures of its splits): pass one of them, e.g. {what}[{next(iter(data))!r}]")


def _call_factory(data, what: str):
    from torch.utils.data import DataLoader, Dataset

    if callable(data) and not isinstance(data, (Dataset, DataLoader, nn.Module, torch.Tensor)):
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
    return data


def _collate(items: list):
    from torch.utils.data import default_collate

    return default_collate(items)


class Unjoinable(LandscapeError):
    """Batches whose shapes after the sample axis differ (``_cat``): a collate_fn padding each batch."""


def _cat(trees: list, what: str):
    """Concatenate trees of one structure along dim 0."""
    first = trees[0]
    if isinstance(first, torch.Tensor):
        try:
            return torch.cat(trees)
        except RuntimeError as exc:
            raise Unjoinable(
                f"{what}: batches of shapes {[tuple(t.shape) for t in trees[:3]]} cannot be joined ({exc}); "
                "expected every batch to have the same shape after the sample axis (pad to a fixed length, "
                "e.g. padding='max_length')"
            ) from None
    if isinstance(first, Mapping):
        return {k: _cat([t[k] for t in trees], what) for k in first}
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)(*(_cat([t[i] for t in trees], what) for i in range(len(first))))
    if isinstance(first, (tuple, list)):
        return type(first)(_cat([t[i] for t in trees], what) for i in range(len(first)))
    return first


def _indices_of(loader, n: int) -> tuple[list[int] | None, str, list[str]]:
    """The dataset indices a loader over a map-style dataset of ``n`` items can yield, each once, in index
    order (None: all ``n``); a note saying which; and how a loop over the loader differs (its repeats, its
    random draws, its dropped last batch), each as a phrase.

    The sampler selects them; batching is the evaluation's own. A ``batch_sampler=`` given to the loader
    selects them in its place: a plain ``BatchSampler`` through its own sampler (read as that sampler given
    as ``sampler=``, its ``drop_last`` as the loader's), any other batch sampler by the indices of one pass of
    its batches."""
    from torch.utils.data import BatchSampler

    sampler, whose = loader.sampler, "the loader's"
    drop_last, size = loader.drop_last, loader.batch_size
    bs = loader.batch_sampler
    if bs is not None and not (type(bs) is BatchSampler and bs.sampler is sampler):  # given as batch_sampler=
        if type(bs) is not BatchSampler:  # its own selection (a subclass may override __iter__): one pass
            drawn = [int(i) for b in bs for i in b]
            idx = sorted(set(drawn))
            order = f"the {len(idx)} indices of the loader's batch sampler {type(bs).__name__}, in index order"
            return idx, order, _repeats(f"its batch sampler {type(bs).__name__}", len(drawn), len(idx))
        sampler, whose = bs.sampler, "its batch sampler's"
        drop_last, size = bs.drop_last, bs.batch_size
    idx, order, differs, per_pass = _sampler_indices(sampler, n, whose)
    if drop_last and size and per_pass % size:
        m = n if idx is None else len(idx)
        differs.append(f"with drop_last=True a pass over the loader leaves out its last {per_pass % size} of "
                       f"{per_pass} samples (a batch short of {size}; which ones follows the sampler's order): all "
                       f"{m} are evaluated")
    return idx, order, differs


def _repeats(what: str, n_drawn: int, n_distinct: int) -> list[str]:
    """How a pass that yields ``n_drawn`` indices, ``n_distinct`` of them distinct, differs (``_indices_of``)."""
    if n_drawn == n_distinct:
        return []
    return [(f"{what} yields {n_drawn} indices in a pass, {n_drawn - n_distinct} of them repeats: each of the "
             f"{n_distinct} samples is evaluated once")]


def _sampler_indices(sampler, n: int, whose: str) -> tuple[list[int] | None, str, list[str], int]:
    """``_indices_of`` for one sampler: (indices it can yield, each once, in index order, or None for all
    ``n``; the note; how a pass differs; how many indices a pass yields)."""
    from torch.utils.data import RandomSampler, SequentialSampler, SubsetRandomSampler
    from torch.utils.data import WeightedRandomSampler as Weighted

    name = type(sampler).__name__
    if type(sampler) in (SequentialSampler, RandomSampler):
        m = len(sampler.data_source)  # a sampler may run over another source than the dataset (range(50))
        k = getattr(sampler, "num_samples", m)
        which = (f"all samples in index order ({whose} {name} can yield every one; its order is not used)" if m == n
                 else f"the first {m} indices ({whose} {name} over {m} samples), in index order")
        differs = []
        if getattr(sampler, "replacement", False):
            differs.append(f"{whose} {name} draws {k} indices with replacement in a pass (some samples repeated, "
                           f"others left out, other ones every pass): each of the {m} samples it can draw is "
                           "evaluated once")
        elif k < m:
            differs.append(f"{whose} {name} yields a random {k} of its {m} samples in a pass (num_samples={k}): all "
                           f"{m} are evaluated (max_samples= takes a fixed-seed subset)")
        elif k > m:
            differs.append(f"{whose} {name} yields {k} indices in a pass (num_samples={k}), repeating some of its "
                           f"{m} samples: each is evaluated once")
        return (None if m == n else list(range(m))), which, differs, k
    if type(sampler) is Weighted:  # every sample of positive weight can be drawn
        idx = torch.nonzero(torch.as_tensor(sampler.weights) > 0).flatten().tolist()
        k = sampler.num_samples
        how = "with replacement" if sampler.replacement else "without replacement"
        repeated = ", some repeated" if sampler.replacement else ""
        differs = [(f"{whose} {name} draws {k} indices by weight {how} in a pass (other ones every pass{repeated}): "
                    f"each of the {len(idx)} samples of positive weight is evaluated once, unweighted")]
        return idx, f"the {len(idx)} indices of positive weight of {whose} {name}, in index order", differs, k
    if type(sampler) is SubsetRandomSampler:
        drawn = [int(i) for i in sampler.indices]
    else:  # a sampler of its own: the indices of one pass
        drawn = [int(i) for i in sampler]
    idx = sorted(set(drawn))
    differs = _repeats(f"{whose} {name}", len(drawn), len(idx))
    return idx, f"the {len(idx)} indices of {whose} {name}, in index order", differs, len(drawn)


#: ``EvalData.notes`` key: how the samples evaluated differ from those of a loop over the DataLoader given
LOADER_NOTE = "differs_from_loader"
#: ``EvalData.notes`` key: the Dataset's items hold other values each time they are read (`_random_items`)
RANDOM_ITEMS_NOTE = "random_items"


def loader_notes(notes: Mapping) -> list[str]:
    """The notes saying how the samples evaluated differ from a loop over the data given (a DataLoader's
    sampler, a Dataset drawing at random): keys ``LOADER_NOTE`` and ``RANDOM_ITEMS_NOTE``, or
    ``"<split>: " + key`` for named splits (then prefixed ``"<split>: "``)."""
    return [f"{str(key)[:-len(k)]}{text}" for key, text in notes.items() for k in (LOADER_NOTE, RANDOM_ITEMS_NOTE)
            if key == k or str(key).endswith(": " + k)]


def warn_differs_from_loader(notes: Mapping) -> None:
    """Warn (``UserWarning``) for each of ``loader_notes(notes)``, where ``read_data`` reads (a Dask worker's
    reach ``compute_surface``'s caller as its other warnings do; the Explorer's panel shows them too)."""
    for text in loader_notes(notes):
        warn_user(f"landscape_nb: {text}")


def _read_loader(loader, what: str, max_samples, seed):
    from torch.utils.data import IterableDataset, default_collate, default_convert

    ds = loader.dataset
    collate = loader.collate_fn
    if loader.batch_size is None and loader.batch_sampler is None and collate is default_convert:
        collate = default_collate  # batch_size=None: the loader yields samples one by one, unstacked; stacked here
    if isinstance(ds, IterableDataset) or not hasattr(ds, "__getitem__") or not hasattr(ds, "__len__"):
        notes = {"source": "DataLoader over an iterable dataset",
                 "order": "as yielded" + (f"; the first {max_samples} samples" if max_samples else "")}
        try:
            tree = _read_iterable(loader, None, what, max_samples)
        except Unjoinable:  # a collate_fn padding each batch to its longest sample (refused before, trial s47)
            if _default_collation(collate):
                raise
            return _recollated_stream(loader, collate, what, max_samples, notes)
        _note_first_of_stream(notes, tree, max_samples, f"DataLoader over {type(ds).__name__}")
        random_note = (_random_stream(lambda: _read_iterable(loader, None, what, max_samples), tree,
                                      type(ds).__name__) if _recollatable(tree) else _random_stream_collate(loader))
        if random_note:
            notes[RANDOM_ITEMS_NOTE] = random_note
        return tree, notes, []
    idx, order, differs = _indices_of(loader, len(ds))
    tree, notes, pos = _read_map(ds, idx, collate, what, max_samples, seed)
    notes = {**notes, "source": f"DataLoader over {type(ds).__name__}", "order": order}
    alone, mixed = ([], None) if _default_collation(collate) else _collated_alone(ds, pos, collate, tree, what)
    if mixed is not None and RANDOM_ITEMS_NOTE not in notes:
        notes[RANDOM_ITEMS_NOTE] = _mixing_note(collate, mixed, batch_len(tree))
    if alone:
        notes["collate"] = (f"the DataLoader's collate_fn pads each batch to its longest sample: all {batch_len(tree)} "
                            "samples are collated at once (padded alike, so that every batching gives the same "
                            f"values); checked on {len(alone)} samples that the loss does not depend on the padding")
    if differs:
        m = len(ds) if idx is None else len(idx)
        notes[LOADER_NOTE] = (
            f"the samples evaluated differ from a loop over this DataLoader: {'; '.join(differs)}. landscape_nb "
            f"takes the {m} distinct samples the loader's sampler can select, each once (a max_samples= subset "
            "of them if given), and evaluates their mean in batches of its own, so that every grid point sees the "
            "same samples and a rerun resumes; to evaluate other ones, pass them (e.g. "
            "torch.utils.data.Subset(dataset, indices))")
    return tree, notes, alone


#: samples ``_collated_alone`` keeps (of the first 64) for ``evaluate.check_padding``
PADDING_SAMPLES = 8


def _recollated_stream(loader, collate, what: str, max_samples, notes: dict) -> tuple[Any, dict, list]:
    """``_read_loader``'s answer for a DataLoader over a stream whose ``collate`` pads each batch to its longest
    sample (its batches cannot be joined): the stream's items, read from the dataset itself (each once, as a
    loader with workers shards them), collated all at once, as a map-style dataset's are (padded alike, so that
    every batching gives the same values), and some collated alone for the padding check (``_collated_alone``)."""
    items = _read_iterable(loader.dataset, list, what, max_samples, whole=True)
    if max_samples is not None:
        items = items[:max_samples]
    tree = _tensorize(collate(items), what)
    alone, mixed = _collated_alone(items, list(range(len(items))), collate, tree, what)
    if mixed is not None:
        notes[RANDOM_ITEMS_NOTE] = _mixing_note(collate, mixed, batch_len(tree))
    notes["collate"] = (f"the DataLoader's collate_fn pads each batch to its longest sample: all {batch_len(tree)} "
                        "samples of the stream, read from its dataset, are collated at once (padded alike, so that "
                        "every batching gives the same values)" + (
                            f"; checked on {len(alone)} samples that the loss does not depend on the padding"
                            if alone else ""))
    random_note = _random_stream_collate(loader)
    if random_note:
        notes[RANDOM_ITEMS_NOTE] = random_note
    return tree, notes, alone


def _collated_alone(ds, pos: list, collate, whole, what: str) -> tuple[list, Any]:
    """``([(row, collate([ds[pos[row]]])), ...], mixed)``: up to ``PADDING_SAMPLES`` samples whose collation alone has
    other per-sample shapes than ``whole`` (``collate`` of all of them): a collate_fn padding per batch. The
    samples looked at are the first 64, then 192 spread over the rest (a set whose first 70 samples were of
    the longest length had none checked, and a model reading its padding passed: trial s33). ``row`` is the
    row of ``whole`` holding the same values, padding aside (a collate_fn that sorts the batch by length
    moves rows); a sample with none (one that masks tokens at random changes them: the comparison would then
    blame the padding) is left out. Empty where none differs, or where
    ``collate`` cannot take one sample. ``mixed``: the first of the first ``PADDING_SAMPLES`` samples of the
    set's per-sample shapes whose collation alone is no row of ``whole`` (`_mixing_note`), else None."""
    leaves = tree_leaves(whole)
    shapes = [tuple(t.shape[1:]) for _, t in leaves]
    out, mixed = [], None
    rest = range(64, len(pos))
    spread = sorted(set(torch.linspace(0, len(rest) - 1, 192).round().long().tolist())) if len(rest) else []
    rows = [*range(min(64, len(pos))), *(rest[k] for k in spread)]
    for row in rows:
        i = pos[row]
        try:
            with warnings.catch_warnings():  # one sample: a batch's std() warns of 0 degrees of freedom (trial s57:
                warnings.simplefilter("ignore")  # 32 of torch's warnings before the note on the collate_fn)
                tree = _tensorize(collate([ds[i]]), what)
        except Exception:  # noqa: BLE001 - a collate_fn written for full batches only: nothing to compare
            return [], None
        if tree_structure(tree) != tree_structure(whole):
            return [], None
        alone = [t for _, t in tree_leaves(tree)]
        if [tuple(t.shape[1:]) for t in alone] == shapes:
            if mixed is None and row < PADDING_SAMPLES and _row_padded(alone, [w for _, w in leaves], row) is None:
                mixed = i
            continue
        found = _row_padded(alone, [w for _, w in leaves], row)
        if found is not None:
            out.append((found, tree))
            if len(out) == PADDING_SAMPLES:
                break
    return out, mixed


def _mixing_note(collate, sample, n: int) -> str:
    """The words for a DataLoader's own ``collate_fn`` that combines samples across the batch (`_collated_alone`
    found ``sample`` collated alone in no row of the ``n`` collated at once): a mixup with a fixed seed, or
    inputs normalized by the batch's statistics, gave the same values every run, 1.8e-2 off the data and off
    a loop over the loader, with no word (trial s33)."""
    return (f"the DataLoader's collate_fn ({getattr(collate, '__name__', type(collate).__name__)}) combines "
            f"samples across the batch: sample {sample} collated alone is no row of the {n} samples collated at "
            "once (e.g. a mixup with a fixed seed, or inputs normalized by the batch's statistics). The values "
            "evaluated are those of the set collated at once, neither the data's themselves nor a loop's over the "
            "loader (which would follow its batch size); pass a collate_fn that treats each sample alone for the "
            "loss on the data themselves")


def _row_padded(alone: list, whole: list, guess: int) -> int | None:
    """The row of the ``whole`` leaves that equals the one-sample leaves ``alone`` once cut to their shapes,
    the rest of it padding (one value throughout; where it is one position, the value most rows hold at the
    far end): a sample beginning with another, [26, 6, 27] for [26, 6], matched it where the rest was any
    value. ``guess`` if it matches; else the first row that does, or None. Padding after the sample (right)
    is tried first, then before it (left: a model reading left padding passed unchecked, trial s33)."""
    for left in (False, True):
        found = _row_aligned(alone, whole, guess, left)
        if found is not None:
            return found
    return None


def _row_aligned(alone: list, whole: list, guess: int, left: bool) -> int | None:
    match = None
    for a, w in zip(alone, whole):
        a = a[0]
        if a.ndim != w.ndim - 1 or any(x > y for x, y in zip(a.shape, w.shape[1:])):
            return None
        box = (slice(None), *(slice(y - x, y) if left else slice(0, x) for x, y in zip(a.shape, w.shape[1:])))
        same = (w[box] == a).reshape(len(w), -1).all(1)
        rest = torch.ones(w.shape[1:], dtype=torch.bool, device=w.device)
        rest[box[1:]] = False
        pad = w[:, rest]  # (rows, positions beyond the sample): padding is one value throughout
        same &= (pad == pad[:, :1]).all(1)
        if pad.shape[1] == 1:  # one position: the value most rows hold at the far end (a sample one token longer)
            flat = w.reshape(len(w), -1)
            same &= pad[:, 0] == torch.mode(flat[:, 0 if left else -1].cpu()).values.to(w.device)
        match = same if match is None else match & same
    if match is None:
        return None
    if bool(match[guess]):
        return guess  # the usual case: rows in the samples' order
    rows = match.nonzero()
    return int(rows[0]) if len(rows) else None


def _read_map(ds, idx, collate, what: str, max_samples, seed):
    """Items of a map-style dataset at ``idx`` (default all), subset chosen before reading: (tree, notes,
    the dataset indices of its rows)."""
    from torch.utils.data import TensorDataset

    n = len(ds)
    pos = list(range(n)) if idx is None else idx
    of = (f"{n} samples" if idx is None else  # it said "100 of 1000" of a sampler's 500 (trial s47)
          f"the {len(idx)} samples the loader's sampler selects (of {n})")
    sub = subset_indices(len(pos), max_samples, seed)
    if sub is not None:
        pos = [pos[int(i)] for i in sub]
    if not pos:
        raise LandscapeError(f"{what}: the Dataset is empty; expected at least one sample")
    notes = {"source": type(ds).__name__}
    if sub is not None:
        notes["subset"] = f"{len(pos)} of {of}, seed {seed}, chosen before reading"
    if (isinstance(ds, TensorDataset) and type(ds).__getitem__ is TensorDataset.__getitem__
            and _default_collation(collate)):  # a subclass may transform in __getitem__
        ix = torch.as_tensor(pos)
        return tuple(t[ix] for t in ds.tensors), notes, pos
    items = [ds[i] for i in pos]
    tree = _tensorize((collate or _collate)(items), what)  # before any item is read again (see _random_items)
    random_note = _random_items(ds, pos, items, collate) or _random_collate(collate, items, tree)
    if random_note:
        notes[RANDOM_ITEMS_NOTE] = random_note
    return tree, notes, pos


#: items ``_random_items`` reads a second time first: all differ when a dataset changes its samples in place
REREAD_ITEMS = 8
#: items it reads again in all (the first ``REREAD_ITEMS``, then the rest spread over the set) when those agree:
#: an augmentation applied with p = 0.1 makes a sample differ between two reads with p = 0.18, which 8 items
#: missed 1 time in 5 and 64 miss with p ~ 3e-6; 56 more reads cost 56/N of the first read's time
REREAD_MORE = 64


def _random_items(ds, pos: list, items: list, collate=None) -> str | None:
    """What to say when items of the map-style dataset ``ds`` (at ``pos``, read once as ``items``) hold other
    values when read again: its ``__getitem__`` draws at random (a training transform: random crops, flips,
    noise, token masking). The surface then evaluates one draw of each sample, the same at every grid point;
    a rerun reads others. The first ``REREAD_ITEMS`` are read again, then, if they agree, up to
    ``REREAD_MORE`` in all, spread over the set. None when they agree (compared exactly, NaN equal to NaN) or
    cannot be compared. A ``__getitem__`` that changes the dataset's own tensors in place
    (``x = self.data[i]; x /= 255``) gives other values too, and is said to (found in the first items, so no
    more of the user's samples are changed again): the evaluation data are collated before the items are
    read again, and the first reads are copied (stacked) before."""
    head = min(REREAD_ITEMS, len(pos))
    more = max(0, min(REREAD_MORE, len(pos)) - head)
    spread = sorted(set(torch.linspace(head, len(pos) - 1, more).round().long().tolist()))
    for fn in dict.fromkeys((collate or _collate, _collate)):  # the loader's collate_fn first: it may draw too
        try:
            for ks in (range(head), spread):
                with warnings.catch_warnings():  # one sample a batch: a collate_fn's std() warns of 0 degrees of
                    warnings.simplefilter("ignore")  # freedom, 32 of torch's warnings (trial s57); the read said its own
                    first = [_tensorize(fn([items[k]]), "") for k in ks]  # copies: a re-read may write into items
                    again = [_tensorize(fn([ds[pos[k]]]), "") for k in ks]
                differ = sum(not _same_tree(a, b) for a, b in zip(first, again))
                if differ and fn is not _collate and any(  # the collate_fn itself draws: the same item, twice
                        not _same_tree(a, _tensorize(fn([items[k]]), "")) for a, k in zip(first, ks)):
                    return _collate_draws_note(fn, f"each of {len(ks)} samples was collated alone twice")
                if differ:
                    return _random_items_note(ds, differ, len(ks), ks is spread)
            return None
        except Exception:  # noqa: BLE001, S112 - a collate_fn for whole batches only, items it cannot stack: the next
            continue
    return None


#: most bytes of evaluation data a random-collate check collates a second time whole (`_random_collate`)
RECOLLATE_BYTES = 512 * 2 ** 20
#: items collated again, three times, when the data are larger than that
RECOLLATE_ITEMS = 1024


def _random_collate(collate, items: list, tree=None) -> str | None:
    """What to say when a DataLoader's own ``collate_fn`` draws at random per batch (mixup, cutmix), which
    reading items again one at a time may not see (``x + (1 - lam)·(x[p] - x)`` returns a batch of one
    unchanged; a collate mixing only batches of 32 or more passed a check on 8). The set was collated once,
    as one batch (``tree``): its ``items`` are collated again whole and compared with it (one mixed draw,
    or a clean one where the evaluated set was mixed, differs), or, for data above ``RECOLLATE_BYTES``, the
    first ``RECOLLATE_ITEMS`` are collated three times. None for the default collation, when they agree, or
    when the collate_fn cannot be called so."""
    if _default_collation(collate):
        return None
    whole = tree is not None and _recollatable(tree)
    try:
        if whole:
            m, draws = len(items), [tree, _tensorize(collate(items), "")]
        else:
            m = min(RECOLLATE_ITEMS, len(items))
            draws = [_tensorize(collate(items[:m]), "") for _ in range(3)]
    except Exception:  # noqa: BLE001 - a collate_fn it cannot call on these items: read as is
        return None
    if all(_same_tree(draws[0], d) for d in draws[1:]):
        return None
    return _collate_draws_note(collate, f"the same {m} samples were collated again as one batch")


def _collate_draws_note(collate, when: str) -> str:
    """The words for a DataLoader's ``collate_fn`` that gave other values ``when`` ...: it draws at random."""
    return (f"the DataLoader's collate_fn ({getattr(collate, '__name__', type(collate).__name__)}) gave other values "
            f"when {when}: it draws at random (e.g. mixup, cutmix or token masking). The set was collated once, as "
            "one batch, so every grid point sees the same values, but they are one draw of many: a rerun draws "
            "others (its store then refuses to resume), and mixed or masked samples are not the data the model is "
            "evaluated on; pass a loader with a deterministic collate_fn for the loss on the data themselves")


def _recollatable(tree) -> bool:
    """Whether evaluation data ``tree`` are small enough (``RECOLLATE_BYTES``) to be collated or read again whole."""
    return sum(t.numel() * t.element_size() for _, t in tree_leaves(tree)) <= RECOLLATE_BYTES


def _random_stream(read_again: Callable, tree, name: str) -> str | None:
    """What to say when an iterable dataset (or a DataLoader over one) read a second time, by ``read_again``,
    gives other samples than the first read (``tree``), compared as a multiset of rows (a stream shuffling
    its order is not a random draw: the mean over the set does not depend on it): its ``__iter__`` or the
    loader's ``collate_fn`` draws at random (noise on 3 items in 10, a mixup of some batches went unseen:
    trial s33). For data of at most ``RECOLLATE_BYTES`` (`_recollatable`); None when they agree or cannot be
    read again."""
    try:
        again = read_again()
    except Exception:  # noqa: BLE001 - a stream it cannot start again (a one-shot generator): read as is
        return None
    if _same_tree(tree, again) or sorted(_row_digests(tree)) == sorted(_row_digests(again)):
        return None
    return (f"the data ({name}) gave other values when read a second time: its __iter__ or the DataLoader's "
            "collate_fn draws at random (e.g. a training transform with random crops, flips or noise, mixup, or "
            "token masking), or it goes on where the first read stopped (an __iter__ over one shared generator, "
            "which cannot start again: this check read the next samples; pass the samples themselves, a Dataset or "
            "tensors, trial s46). Each sample was read once, so every grid point sees the same values, but they are one "
            "draw of many: a rerun reads others (its store then refuses to resume), and augmented samples are not "
            "the data the model is evaluated on; pass the data with their evaluation transform and a deterministic "
            "collate_fn for the loss on the data themselves")


def _row_digests(tree) -> list[bytes]:
    """A digest of each sample's values (its row in every leaf of ``tree``); [] for another structure."""
    import hashlib

    leaves = [t.detach().cpu().contiguous() for _, t in tree_leaves(tree)]
    n = batch_len(tree)
    if any(t.ndim == 0 or len(t) != n for t in leaves):
        return []
    rows = [t.reshape(n, -1).numpy().view("uint8").reshape(n, -1) if t.dtype != torch.bfloat16 else
            t.reshape(n, -1).view(torch.int16).numpy().view("uint8").reshape(n, -1) for t in leaves]
    return [hashlib.blake2b(b"".join(r[k].tobytes() for r in rows), digest_size=16).digest() for k in range(n)]


def _random_stream_collate(loader) -> str | None:
    """`_random_collate` for a DataLoader over an iterable dataset too large to read again (`_random_stream`):
    the first ``batch_size`` items of a fresh pass over the dataset, collated three times."""
    import itertools

    collate = loader.collate_fn
    if _default_collation(collate):
        return None
    try:
        items = list(itertools.islice(iter(loader.dataset), loader.batch_size or 1))
    except Exception:  # noqa: BLE001 - a stream it cannot start again: read as is
        return None
    return _random_collate(collate, items) if items else None


def _random_items_note(ds, differ: int, m: int, spread: bool) -> str:
    read = (f"{m} more of its samples, spread over the set, were read again" if spread
            else f"its first {m} samples were read again")
    return (f"the dataset ({type(ds).__name__}) gave other values when {read} ({differ} of {m} differ): its "
            "__getitem__ (or the DataLoader's collate_fn) draws at random (e.g. a training transform with random "
            "crops, flips or noise, or token masking), or changes its stored samples in place (x /= 255 on a cached "
            "tensor: each read transforms them again). Each sample was read once, so every grid point sees the "
            "same values, but they are one draw of many: a rerun reads others (its store then refuses to resume), "
            "and augmented samples are not the data the model is evaluated on; pass the dataset with its "
            "evaluation transform (or seed the draw per index; transform a copy, x = x / 255) for the loss on the "
            "data themselves")


def _same_tree(a, b) -> bool:
    """Whether the tensor pytrees ``a`` and ``b`` hold the same shapes and values (NaN equal to NaN)."""
    if tree_structure(a) != tree_structure(b):
        return False
    for (_, x), (_, y) in zip(tree_leaves(a), tree_leaves(b)):
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if not torch.equal(x, y) and not ((x.is_floating_point() or x.is_complex())
                                          and bool(((x == y) | (x.isnan() & y.isnan())).all())):
            return False
    return True


def _default_collation(collate) -> bool:
    """Whether ``collate`` is the default collation (ours, torch's ``default_collate``, or none given)."""
    return collate is None or collate is _collate or _is_default_collate(collate)


def _is_default_collate(fn) -> bool:
    from torch.utils.data import _utils

    return fn is getattr(_utils.collate, "default_collate", None)


#: a stream (an IterableDataset, a DataLoader over one) that has yielded this many bytes of tensors without
#: ending is refused: it is read whole before any point, and an endless one filled the memory without a word
#: (trial s46)
STREAM_MAX_BYTES = 4 * 2**30
#: ... or this many samples (a stream of small ones took 16 min to reach 4 GiB, re-trial s46)
STREAM_MAX_SAMPLES = 2**24
#: reading a stream for longer than this many seconds is said once (a warning: how much so far, max_samples=)
STREAM_SAY_SECONDS = 20.0


def _read_iterable(it, collate, what: str, max_samples, *, whole: bool = False):
    """Batches (a loader) or items (collated in groups of 256) until ``max_samples`` samples; refused past
    ``STREAM_MAX_BYTES`` (an endless stream), said once past ``STREAM_SAY_SECONDS``. ``whole``: the items
    collated in one group at the end (``collate=list``: the items themselves)."""
    import time

    trees, n, group, nbytes, start, said = [], 0, [], 0, time.monotonic(), False
    for obj in it:
        if collate is not None:
            group.append(obj)
            n += 1
            if whole:
                nbytes += sum(t.nbytes for _, t in tree_leaves(obj))
            elif len(group) == 256:
                trees.append(collate(group))
                group = []
        else:
            tree = _tensorize(obj, what)
            trees.append(tree)
            n += batch_len(tree)
        if max_samples is not None and n >= max_samples:
            break
        if group and not whole:
            continue
        if not whole:
            nbytes += sum(t.nbytes for _, t in tree_leaves(trees[-1]) if isinstance(t, torch.Tensor))
        if nbytes > STREAM_MAX_BYTES or n > STREAM_MAX_SAMPLES:
            raise LandscapeError(
                f"{what}: the stream yielded {n} samples ({nbytes / 2**20:.0f} MiB) and had not ended (an endless "
                "IterableDataset?); a stream is read whole into memory before any point: pass max_samples=N to "
                "evaluate its first N samples, or a Dataset with __len__")
        if not said and time.monotonic() - start > STREAM_SAY_SECONDS:
            said = True
            warn_user(f"landscape_nb: {what}: still reading the stream after {time.monotonic() - start:.0f} s "
                      f"({n} samples, {nbytes / 2**20:.0f} MiB so far); it is read to its end before any point "
                      f"(an endless one is refused at {STREAM_MAX_BYTES / 2**30:g} GiB or {STREAM_MAX_SAMPLES} "
                      "samples): pass max_samples=N to "
                      "evaluate its first N samples")
    if whole:
        if not group:
            raise LandscapeError(f"{what}: the data yielded no samples")
        return collate(group)
    if group:
        trees.append(collate(group))
    if not trees:
        raise LandscapeError(f"{what}: the data yielded no samples")
    tree = _tensorize(_cat(trees, what), what)
    if max_samples is not None and batch_len(tree) > max_samples:
        tree = tree_map(lambda t: t[:max_samples], tree)
    return tree


# ------------------------------------------------------ plain-tensor helpers ----

def as_tensors(data, what: str = "data") -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, targets)`` as two tensors, for data of the plain form (one input tensor and its
    targets); other forms raise ``LandscapeError`` (use ``read_data``)."""
    ev = read_data(data, what)
    x, y = ev.split()
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise LandscapeError(
            f"{what} has the form {ev.notes['structure']}; expected (inputs, targets) with one input tensor here"
        )
    return x, y


def subset(x: torch.Tensor, y: torch.Tensor, max_samples: int | None, seed: int):
    """A fixed-seed subset of ``max_samples`` samples of two tensors (see ``subset_indices``)."""
    idx = subset_indices(len(x), max_samples, seed)
    return (x, y) if idx is None else (x[idx], y[idx])


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


__all__ = ["EvalData", "read_data", "subset_indices", "tree_map", "tree_leaves", "tree_structure", "batch_len",
           "call_model", "args_kwargs", "check_finite_data", "non_finite_leaves", "NON_FINITE_DATA", "as_tensors",
           "subset", "batches", "RULES"]
