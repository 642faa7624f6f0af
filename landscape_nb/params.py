"""A model's weights as one flat vector: layout, flatten, perturb in place, restore.

The layout lists the tensors a direction covers (trainable parameters, and
optionally floating-point buffers such as BatchNorm running statistics) in
``named_parameters()`` / ``named_buffers()`` order.
"""
from __future__ import annotations

import contextlib
import hashlib
import threading
import weakref
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .errors import LandscapeError, warn_user


def float_state_buffers(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The floating-point buffers of the model's ``state_dict`` (BatchNorm's running mean and variance), in
    ``named_buffers()`` order; non-persistent ones (a rotary embedding's cos/sin cache) are not model state."""
    persistent = set(model.state_dict(keep_vars=True))
    return [(name, b) for name, b in model.named_buffers() if b.is_floating_point() and name in persistent]


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """``t`` detached, on the CPU, as a numpy array; bfloat16, which numpy has not (``.numpy()`` raised
    ``TypeError: Got unsupported ScalarType BFloat16``), as float32, which holds every bfloat16 value exactly."""
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def check_materialized(model: nn.Module, who: str = "the model") -> None:
    """Raise ``LandscapeError`` if a parameter or buffer of ``model`` is on the meta device (a shape, no values), or
    a lazy module's is not initialized yet (no shape: torch's "Can't access the shape of an uninitialized
    parameter" came from the weights' layout, trial s57)."""
    for what, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for pname, t in named:
            if nn.parameter.is_lazy(t):
                owner = model.get_submodule(pname.rpartition(".")[0]) if "." in pname else model
                raise LandscapeError(
                    f"{who}'s {what} {pname!r} ({type(owner).__name__}) is not initialized yet: a lazy module takes "
                    "its shape from its first input; expected initialized weights: run the model once on a batch of "
                    "your data first (model(x), under torch.no_grad())")
            if t.is_meta:
                raise LandscapeError(
                    f"the model's {what} {pname!r} is on the meta device (shape only, no values); "
                    "expected real weights: materialize them, e.g. model.to_empty(device='cpu') then "
                    "model.load_state_dict(...)"
                )


#: why a checkpoint's tensors have no values, and the fix (`check_state_materialized`, and a file of them read by
#: `trajectory.load_state_dict_file`)
LAZY_CHECKPOINT = ("(a lazy module's, saved before the model's first input gave it a shape); expected a state dict "
                   "saved after the model ran once: run it on a batch of your data (model(x), under torch.no_grad()) "
                   "before saving its checkpoints")


def check_state_materialized(state: Mapping, who: str) -> None:
    """Raise ``LandscapeError`` if a tensor of the state dict ``state`` is a lazy module's, not initialized yet (a
    state dict taken before the model's first forward: torch's "Can't access the shape of an uninitialized
    parameter" came from the PCA, s58)."""
    for key, t in state.items():
        if isinstance(t, torch.Tensor) and nn.parameter.is_lazy(t):
            raise LandscapeError(f"{who} holds {key!r} not initialized yet {LAZY_CHECKPOINT}")


@dataclass(frozen=True)
class Entry:
    name: str
    shape: tuple[int, ...]
    kind: str  # "param" or "buffer"

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass(frozen=True)
class ParamLayout:
    """Names, shapes and kinds of the tensors that make up the flat vector."""

    entries: tuple[Entry, ...]

    @classmethod
    def of(cls, model: nn.Module, include_buffers: bool = False, frozen: Sequence[str] = ()) -> "ParamLayout":
        """The trainable parameters of ``model`` (``named_parameters()`` order), plus the frozen
        (``requires_grad=False``) parameters named in ``frozen`` (kind ``"frozen"``, in their
        place), plus the floating-point buffers of its ``state_dict`` with ``include_buffers`` (kind ``"buffer"``,
        last; non-persistent ones, such as a rotary embedding's cos/sin cache, are not model state)."""
        if not isinstance(model, nn.Module):
            raise LandscapeError(
                f"expected a torch.nn.Module, got {type(model).__name__}; pass the model object itself"
            )
        model = unwrap_model(model)
        check_materialized(model)  # torch's "Tensor.item() cannot be called on meta tensors" came later (trial s34)
        frozen = set(frozen)
        entries = [
            Entry(name, tuple(p.shape), "param" if p.requires_grad else "frozen")
            for name, p in model.named_parameters()
            if p.requires_grad or name in frozen
        ]
        if include_buffers:
            entries += [Entry(name, tuple(b.shape), "buffer") for name, b in float_state_buffers(model)]
        if not entries:
            raise LandscapeError(
                f"{type(model).__name__} has no trainable parameters; a loss landscape needs "
                "weights to perturb (check requires_grad)"
            )
        return cls(tuple(entries))

    @property
    def n_params(self) -> int:
        return sum(e.numel for e in self.entries)

    @property
    def frozen_names(self) -> tuple[str, ...]:
        """Frozen (``requires_grad=False``) parameters the layout covers (paths between models)."""
        return tuple(e.name for e in self.entries if e.kind == "frozen")

    @property
    def include_buffers(self) -> bool:
        return any(e.kind == "buffer" for e in self.entries)

    def offsets(self) -> list[tuple[int, int]]:
        out, start = [], 0
        for e in self.entries:
            out.append((start, start + e.numel))
            start += e.numel
        return out

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Views of ``flat`` (last dim = n_params) shaped like each entry."""
        lead = tuple(flat.shape[:-1])
        return [flat[..., a:b].view(lead + tuple(e.shape)) for e, (a, b) in zip(self.entries, self.offsets())]

    def tensors(self, model: nn.Module) -> list[torch.Tensor]:
        """The model's live tensors in layout order."""
        model = unwrap_model(model)
        named = dict(model.named_parameters())
        named.update(dict(model.named_buffers()))
        try:
            return [named[e.name] for e in self.entries]
        except KeyError as exc:
            raise LandscapeError(
                f"model {type(model).__name__} has no tensor {exc.args[0]!r} that the directions "
                "cover; the directions were made for another architecture: make them from this model"
            ) from None

    def check_model(self, model: nn.Module, what: str = "directions") -> None:
        """Refuse a model whose tensors differ from this layout, naming the first mismatch."""
        other = ParamLayout.of(model, include_buffers=self.include_buffers, frozen=self.frozen_names)
        if other == self:
            return
        mine = {e.name: e.shape for e in self.entries}
        theirs = {e.name: e.shape for e in other.entries}
        missing = [n for n in mine if n not in theirs]
        extra = [n for n in theirs if n not in mine]
        shape = [(n, mine[n], theirs[n]) for n in mine if n in theirs and mine[n] != theirs[n]]
        kind = {e.name: e.kind for e in other.entries}
        frozen = [e.name for e in self.entries if e.name in kind and (e.kind == "frozen") != (kind[e.name] == "frozen")]
        detail = (
            f"missing in the model: {missing[:3]}" if missing
            else f"not in the {what}: {extra[:3]}" if extra
            else f"shape of {shape[0][0]!r}: {what} {shape[0][1]}, model {shape[0][2]}" if shape
            else f"{frozen[:3]} trainable in one and frozen (requires_grad=False) in the other" if frozen
            else "tensor order differs"
        )
        now_frozen = {n for n, p in unwrap_model(model).named_parameters() if not p.requires_grad}
        if missing and set(missing) <= now_frozen and not (extra or shape):
            raise LandscapeError(
                f"the {what} cover {len(missing)} tensor(s) frozen in the model (requires_grad=False) since they "
                f"were made: {missing[:3]}{' and more' if len(missing) > 3 else ''}; expected the same "
                "tensors trainable as when they were made: call requires_grad_(True) on them, or make the "
                f"{what} from the model as it is now")
        if frozen and not (missing or extra or shape):
            raise LandscapeError(
                f"the {what} and the model have the same tensors but {detail}; expected the same tensors frozen in "
                "both: call requires_grad_() alike on both, or make the directions from this model")
        raise LandscapeError(
            f"the {what} were made for another architecture ({self.n_params} values) than the "
            f"model ({other.n_params} values); {detail}. Make the {what} from this model."
        )

    def fingerprint(self) -> str:
        text = ";".join(f"{e.name}:{e.kind}:{'x'.join(map(str, e.shape))}" for e in self.entries)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_json(self) -> list:
        return [[e.name, list(e.shape), e.kind] for e in self.entries]

    @classmethod
    def from_json(cls, rows: Sequence) -> "ParamLayout":
        return cls(tuple(Entry(str(n), tuple(int(s) for s in shape), str(k)) for n, shape, k in rows))


def flatten(model: nn.Module, layout: ParamLayout | None = None) -> torch.Tensor:
    """The model's weights (per ``layout``) as one detached 1-D tensor on their device."""
    layout = layout or ParamLayout.of(model)
    return torch.cat([t.detach().reshape(-1) for t in layout.tensors(model)])


def check_finite(layout: ParamLayout, tensors: Sequence[torch.Tensor], consequence: str) -> None:
    """Raise ``LandscapeError`` naming the first floating-point tensor of ``layout`` (``tensors`` in its
    order) that holds NaN or inf, and how many; ``consequence`` says what that would do to the run."""
    for entry, t in zip(layout.entries, tensors):
        if not t.is_floating_point() or t.numel() == 0:
            continue
        finite = torch.isfinite(t.detach())
        if not bool(finite.all()):
            raise LandscapeError(f"the model's {entry.kind} {entry.name!r} holds {int((~finite).sum())} non-finite "
                                 f"value(s) (NaN or inf){consequence}; expected finite weights (reload the "
                                 "checkpoint, or check the training run that produced it)")


def _set_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    """Put back each module's training flag through its own ``train()`` (which some modules
    override, e.g. to merge adapter weights), parents first: a parent's call sets its
    children, and the children that differ are set after it."""
    for m, mode in modes:  # model.modules() order: pre-order
        if m.training != mode:
            m.train(mode)


_MODEL_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # a model → the RLock `restoring` holds
_MODEL_LOCKS_LOCK = threading.Lock()


@contextlib.contextmanager
def holding(model: nn.Module) -> Iterator[None]:
    """Hold ``model`` (unwrapped) for this thread: another thread's `restoring` of it waits, saying so. Two
    computations on one model in two threads (a notebook cell beside the Explorer's run) each moved the
    weights under the other: wrong values at every point, and the weights left moved (trial s35)."""
    model = unwrap_model(model)
    with _MODEL_LOCKS_LOCK:
        lock = _MODEL_LOCKS.setdefault(model, threading.RLock())
    if not lock.acquire(blocking=False):
        warn_user(f"landscape_nb: another computation on this {type(model).__name__} is running in another thread; this one "
                  "waits for it to end (each moves the model's weights while it runs). To run both at once, give "
                  "one a copy: copy.deepcopy(model)")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def restoring(model: nn.Module) -> Iterator[None]:
    """Snapshot every parameter and buffer and each module's training flag; put them back
    bit-identically on exit, also after an exception. Cheap enough to wrap every tile. Meanwhile the model
    is this thread's: another thread restoring it waits (`holding`).

    Tensors that forward hooks keep as plain module attributes (``spectral_norm``'s and ``prune``'s
    ``weight``) are put back too, as the very objects they were: a ``vmap`` pass leaves its batched
    tensors there, which can then be neither copied nor saved, and a plain pass its perturbed weight."""
    with holding(model):
        yield from _restoring(model)


def _restoring(model: nn.Module) -> Iterator[None]:
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t is not None]
    saved = [t.detach().clone() for t in tensors]
    storages = [t.data for t in tensors]  # a tensor given other storage (``.data =``, a memory format) gets it back
    modes = [(m, m.training) for m in model.modules()]
    attrs = [(m, {k: v for k, v in vars(m).items() if isinstance(v, torch.Tensor)}) for m in model.modules()]
    try:
        yield
    finally:
        _set_modes(modes)  # first: a train() override may touch weights, which are restored next
        for t, own in zip(tensors, storages):
            if t.data_ptr() != own.data_ptr():
                t.data = own
        with torch.no_grad():
            torch._foreach_copy_([t.detach() for t in tensors], saved)
        for m, before in attrs:
            d = vars(m)
            for k in [k for k, v in d.items() if isinstance(v, torch.Tensor) and d[k] is not before.get(k)]:
                if k in before:
                    d[k] = before[k]
                elif torch._C._functorch.is_batchedtensor(d[k]):  # made by a vmap pass: nothing to put back
                    del d[k]


@contextlib.contextmanager
def weights_put_back(model) -> Iterator[None]:
    """`restoring` around a computation on a user's ``model``, whose forward may write its own weights
    (``nn.Embedding(max_norm=...)``, a ``clamp_`` in forward: left written, re-trial s57): a lazy module refused in
    words first (the snapshot's clone raised torch's "Attempted to use an uninitialized parameter"); nothing for
    a non-module, which the computation refuses in its own words."""
    if not isinstance(model, nn.Module):
        yield
        return
    check_materialized(unwrap_model(model))
    with restoring(model):
        yield


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration; every module's own flag put back after (``train(mode)`` on
    the root would overwrite a mixed state, e.g. a frozen BatchNorm in a training model)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        _set_modes(modes)


def variance_buffers(layout: ParamLayout) -> list[int]:
    """Positions in ``layout`` of BatchNorm ``running_var`` buffers: a point beyond the ends of a
    path can extrapolate them below 0 (NaN outputs), where ``Perturber`` can clamp them at 0."""
    return [i for i, e in enumerate(layout.entries) if e.kind == "buffer" and e.name.endswith("running_var")]


def moved_variances(layout: ParamLayout, vectors: torch.Tensor) -> list[str]:
    """Names of the BatchNorm ``running_var`` buffers that ``vectors`` (n, n_params) move (non-zero somewhere)."""
    positions = variance_buffers(layout)
    if not positions:
        return []
    moving = layout.split(vectors.ne(0).any(0))
    return [layout.entries[i].name for i in positions if bool(moving[i].any())]


class Perturber:
    """Writes ``w0 + coeffs @ D`` into the model's tensors in place (no allocation per point).

    With ``clamp_variances`` BatchNorm ``running_var`` buffers in the layout are clamped at 0
    after each write (paths between models; see ``variance_buffers``); without, a negative
    variance stays and the point's outputs are NaN, as in the reference implementation.
    """

    def __init__(self, model: nn.Module, layout: ParamLayout, directions: torch.Tensor, *,
                 clamp_variances: bool = True, base: torch.Tensor | None = None):
        self.layout = layout
        self.targets = layout.tensors(model)
        # ``base``: w0 as given, where calls before this one may have changed the model's tensors (a forward that
        # writes its weights: nn.Embedding(max_norm=...) renormalizes the rows it looks up, trial s57)
        self.base = flatten(model, layout).clone() if base is None else base
        self.directions = directions.to(device=self.base.device, dtype=self.base.dtype)
        self.flat = torch.empty_like(self.base)
        views = layout.split(self.flat)
        # tensors every direction leaves at zero (e.g. biases and BN under ignore="biasbn") keep their
        # values: not written, so their version counters stay and BN folds stay cached (fold.py)
        moving = [bool(d.any()) for d in layout.split(self.directions.ne(0).any(0))]
        self.written = [t for t, m in zip(self.targets, moving) if m]
        self.views = [v for v, m in zip(views, moving) if m]
        # positions of the running_var buffers clamped at each write (also read by the stacked passes, tuning.py)
        self.clamped = [i for i in variance_buffers(layout) if moving[i]] if clamp_variances else []
        self.variances = [self.targets[i] for i in self.clamped]
        self.coeffs = torch.zeros(len(self.directions), dtype=self.base.dtype, device=self.base.device)

    @torch.no_grad()
    def set(self, coeffs: torch.Tensor | Sequence[float]) -> None:
        """``coeffs``: one coefficient per direction (a tensor already on the device avoids a sync).
        They are kept in ``self.coeffs`` for layers that combine precomputed terms (multipoint)."""
        c = torch.as_tensor(coeffs, dtype=self.base.dtype, device=self.base.device)
        self.coeffs.copy_(c)
        torch.addmv(self.base, self.directions.T, c, out=self.flat)
        if self.written:
            torch._foreach_copy_(self.written, self.views)
        if self.variances:
            torch._foreach_clamp_min_(self.variances, 0.0)


#: name prefixes that wrappers add to a state dict's keys: DataParallel/DDP, torch.compile, Lightning's self.model
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")


def match_state_keys(state, names):
    """``state`` (a state dict) with the prefix of a wrapper it was saved from removed, where every one of its
    keys has it and none of ``names`` (the model's ``state_dict()`` keys) does; else ``state`` itself.

    Saved from ``DataParallel`` (``module.conv1.weight``), a compiled model (``_orig_mod.``) or a Lightning
    module holding the network as ``self.model``; nested ones too. The ``_metadata`` that ``load_state_dict``
    reads (e.g. BatchNorm's version, for checkpoints without ``num_batches_tracked``) is renamed with them.
    """
    from collections import OrderedDict

    names = list(names)
    for prefix in WRAPPER_PREFIXES * len(WRAPPER_PREFIXES):  # nested wrappers, in any order
        keys = list(state)
        if not keys or not all(k.startswith(prefix) for k in keys) or any(n.startswith(prefix) for n in names):
            continue
        stripped = OrderedDict((k[len(prefix):], v) for k, v in state.items())
        meta = getattr(state, "_metadata", None)
        if meta is not None:  # module names: "module.conv1" -> "conv1", the wrapper itself "module" -> ""
            stripped._metadata = OrderedDict(
                (k[len(prefix):] if k.startswith(prefix) else ("" if k == prefix[:-1] else k), v)
                for k, v in meta.items())
        state = stripped
    return state


def unwrap_model(model):
    """The module inside ``torch.compile`` (``_orig_mod``), ``DataParallel`` and
    ``DistributedDataParallel`` (``module``) wrappers, nested ones too; anything else as is.

    Every public function that takes a model unwraps it first, so tensor names carry no
    ``_orig_mod.``/``module.`` prefix and a compiled and a plain model compare equal.
    """
    while True:
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (CPU for a model without parameters)."""
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of ``model``'s first floating-point parameter (float32 for a model without one)."""
    return next((t.dtype for t in model.parameters() if t.is_floating_point()), torch.float32)


def batchnorm_modules(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model`` (1d, 2d, 3d, SyncBatchNorm, lazy ones), in ``modules()`` order."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
