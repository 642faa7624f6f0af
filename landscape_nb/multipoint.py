"""Sharing work between grid points: the model's first layer evaluated once per direction.

A linear or convolutional layer is affine in its own weights, so at ``w0 + Σ c_k d_k``
its output on a fixed input is ``f(x; w0) + Σ c_k f_lin(x; d_k)``, where ``f_lin`` is
the layer with the direction's weight and bias slices in place of its own. When that
layer is the first one to see the data (its input is a view of the evaluation inputs,
so it depends on no weight), the ``1 + n_dirs`` terms are computed once per batch, and
each grid point replaces the layer's matmul or convolution by one ``addmv`` over them.
For the zoo's MLP (64-128-64-10) that halves the FLOPs of every point.

Exact up to float rounding (the sum is taken in another order); ``Evaluator`` checks the
result against the model itself before using it and otherwise evaluates the plain way.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

from .data import batch_len, tree_map
from .params import Perturber
from .trees import tensor_leaves

#: the terms of every batch together must fit in this many elements (fp32: 256 MiB)
MAX_BASIS_ELEMENTS = 64 * 2**20
#: use the shared layer only when its fan-in per output is this many times the terms per output
MIN_FAN_IN_RATIO = 4

_AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_OWN_FORWARDS = {cls.forward for cls in _AFFINE}


def call(forward: nn.Module, xb):
    """``forward(xb)``, ``forward(*xb)`` or ``forward(**xb)`` for a tensor, tuple/list or dict."""
    if isinstance(xb, dict):
        return forward(**xb)
    if isinstance(xb, (tuple, list)):
        return forward(*xb)
    return forward(xb)


class SharedFirstLayer:
    """The first affine layer of ``forward``, evaluated once per direction and batch.

    Parameters
    ----------
    module : nn.Linear or nn.ConvNd
        The layer; its weight (and bias, if any) are tensors the perturber writes.
    perturber : Perturber
        Holds the centre, the directions and the coefficients of the current point.
    slots : dict "weight"/"bias" -> int
        Where the layer's weight and bias are in ``perturber.targets``.
    storages : set of int
        Addresses of the data storages the layer's input may be a view of; any other input
        runs the layer itself.

    Use ``SharedFirstLayer.find`` to build one; while installed (``install``/``uninstall`` or
    ``active()``) the layer returns ``terms[0] + Σ c_k terms[k]`` for each input it is given,
    the terms computed once per distinct input (batch).
    """

    def __init__(self, module: nn.Module, perturber: Perturber, slots: dict[str, int], storages: set[int]):
        self.module = module
        self.perturber = perturber
        self.slots = slots
        self.storages = storages
        self._terms: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._own = None
        #: inside a ``vmap`` over points (``SpeedChoices._points_stacked``): each point's coefficients
        self.batched_coeffs: torch.Tensor | None = None
        #: in a ``BatchAxisStack`` pass: the points' coefficients (k, n_dirs), and the storage address of
        #: each input repeated for it -> the evaluation input it repeats
        self.stacked_coeffs: torch.Tensor | None = None
        self.repeated: dict[int, torch.Tensor] = {}
        self.guard: PerSampleGuard | None = None  # the pass's, while stacked_coeffs is set

    # ------------------------------------------------------------ finding ----
    @classmethod
    def find(cls, forward: nn.Module, perturber: Perturber, xb, n_samples: int) -> "SharedFirstLayer | None":
        """The first linear/conv layer that ``forward`` applies to a view of the inputs ``xb``,
        once per pass, with perturbed weights, enough fan-in to be worth sharing and terms for
        ``n_samples`` samples that fit in ``MAX_BASIS_ELEMENTS``; else None."""
        targets = {id(t): i for i, t in enumerate(perturber.targets)}
        leaves = tensor_leaves(xb)
        if not leaves:
            return None
        storages = {t.untyped_storage().data_ptr() for t in leaves}
        calls: list[tuple[nn.Module, torch.Tensor]] = []

        def hook(m, args):
            calls.append((m, args[0] if args else None))

        handles = [m.register_forward_pre_hook(hook) for m in forward.modules() if isinstance(m, _AFFINE)]
        try:
            with torch.no_grad():
                call(forward, xb)
        except Exception:  # the model runs on its own in the evaluator; here only the structure matters
            return None
        finally:
            for h in handles:
                h.remove()
        if not calls:
            return None
        module, inp = calls[0]
        if sum(m is module for m, _ in calls) != 1 or not isinstance(inp, torch.Tensor):
            return None
        if type(module).forward not in _OWN_FORWARDS:  # a subclass's forward (a weight constraint, "same"
            return None  # padding): not the affine map of its weights the terms stand for
        if inp.untyped_storage().data_ptr() not in storages:  # computed from the data: may hold weights
            return None
        slots = {"weight": targets.get(id(module.weight), -1)}
        if module.bias is not None:
            slots["bias"] = targets.get(id(module.bias), -1)
        if min(slots.values()) < 0:  # a weight the perturber does not write (frozen, or a derived copy)
            return None
        n_terms = 1 + perturber.directions.shape[0]
        fan_in = module.weight[0].numel()
        if fan_in < MIN_FAN_IN_RATIO * n_terms or len(inp) == 0:
            return None
        with torch.no_grad():
            per_sample = module(inp[:1]).numel()
        if n_terms * per_sample * n_samples > MAX_BASIS_ELEMENTS:
            return None
        return cls(module, perturber, slots, storages)

    # ------------------------------------------------------------- terms -----
    @torch.no_grad()
    def terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(centre output flat (M,), direction outputs (n_dirs, M), output buffer, both as one
        (1 + n_dirs, M) basis) for the layer input ``x``, computed on first use and kept while they fit in
        ``MAX_BASIS_ELEMENTS``."""
        key = (x.data_ptr(), tuple(x.shape), tuple(x.stride()))
        entry = self._terms.get(key)
        if entry is not None:
            return entry
        p = self.perturber
        centre, dirs = p.layout.split(p.base), p.layout.split(p.directions)
        w, b = self.slots["weight"], self.slots.get("bias")
        run = self.module._conv_forward if isinstance(self.module, nn.modules.conv._ConvNd) else F.linear
        dt = self.module.weight.dtype  # the flat vectors are float64 where the layout holds a float64 buffer (s35)
        h0 = run(x, centre[w].to(dt), None if b is None else centre[b].to(dt))
        # one (1 + n_dirs, M) matrix, in the standard layout (channels_last outputs too): k points' outputs
        # are then one GEMM, [1, c] @ basis, with no copy of the centre's terms into the output first (an
        # addmm's: 2-core CPU, 27 points of mlp-digits, 0.15 vs 0.28 ms a pass); each term written into its
        # row as it is computed, so that no more than one is held beside it
        basis = h0.new_empty((1 + len(p.directions), h0.numel()))
        basis[0] = h0.reshape(-1)
        for k in range(len(p.directions)):
            basis[1 + k] = run(x, dirs[w][k].to(dt), None if b is None else dirs[b][k].to(dt)).reshape(-1)
        entry = (basis[0], basis[1:], torch.empty_like(h0, memory_format=torch.contiguous_format), basis)
        held = sum(b.numel() for *_, b in self._terms.values())
        if held + basis.numel() > MAX_BASIS_ELEMENTS or any(
                k[0] == key[0] and k[1] != key[1] for k in self._terms):  # a batch starting where a held one does,
            self._terms.clear()  # of another size: another batching (the batch-size trial's next candidate), whose
            # terms replace the last one's; each size's were kept, 245 MB of a 1.8M-parameter MLP's (trial s38)
        self._terms[key] = entry
        return entry

    def _forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """The layer's output at ``perturber.coeffs``: ``terms[0] + Σ c_k terms[k]``, one addmv."""
        if self.stacked_coeffs is not None and not (args or kwargs):
            with self.guard.trusted():
                rows = self._rows_per_point(x)
            if rows is not None:
                self.guard.taint(rows)
                return rows
        if args or kwargs or torch.is_grad_enabled() or x.untyped_storage().data_ptr() not in self.storages:
            return type(self.module).forward(self.module, x, *args, **kwargs)
        h0, hd, buf, _ = self.terms(x)
        if self.batched_coeffs is not None:  # one output per vmapped point
            return (self.batched_coeffs.to(hd.dtype) @ hd + h0).view(buf.shape)
        torch.addmv(h0, hd.T, self.perturber.coeffs.to(hd.dtype), out=buf.view(-1))  # float64 where a float64
        # buffer made the flat vectors so (a path moving one, trial s35); the layer's outputs are its weight's dtype
        return buf

    def _rows_per_point(self, x: torch.Tensor) -> torch.Tensor | None:
        """For ``x`` laid out as ``BatchAxisStack`` repeats the inputs (k copies of the evaluation
        samples, point-major, contiguous from the start of the repeated storage): the layer's output
        at each point's coefficients, (k * n, ...), from the terms of the samples themselves; None for
        any other input."""
        orig = self.repeated.get(x.untyped_storage().data_ptr())
        k = len(self.stacked_coeffs)
        if (orig is None or not x.is_contiguous() or x.data_ptr() != x.untyped_storage().data_ptr()
                or x.dim() == 0 or x.shape[0] % k or x.numel() != k * orig.numel()):
            return None
        _, _, buf, basis = self.terms(orig.view(x.shape[0] // k, *x.shape[1:]))
        coeffs = self.stacked_coeffs.to(basis.dtype)
        return torch.mm(torch.cat([coeffs.new_ones(k, 1), coeffs], 1), basis).view(x.shape[0], *buf.shape[1:])

    def install(self) -> None:
        """From now on the layer combines terms (until ``uninstall``); a forward set on the instance
        is put back after. Only for passes over the evaluation batches, under ``torch.no_grad``."""
        d = self.module.__dict__
        self._own = d.get("forward")
        d["forward"] = self._forward  # an instance attribute shadows the class's forward

    def uninstall(self) -> None:
        d = self.module.__dict__
        if self._own is None:
            d.pop("forward", None)
        else:
            d["forward"] = self._own
        self._own = None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """``install`` for the duration."""
        self.install()
        try:
            yield
        finally:
            self.uninstall()

    def clear(self) -> None:
        """Forget the terms (the centre or the data changed)."""
        self._terms.clear()


#: ``BatchAxisStack`` keeps the repeated inputs of a pass for the next one up to this size
REPEATS_KEPT_BYTES = 64 * 2**20
#: a stacked linear layer with at most this many outputs computes them transposed, ``W @ x^T``, so that
#: the GEMM's long side is the samples (2-core CPU, 32 points of (360, 64) -> 10 logits: 5-6 vs 15-30 us
#: a point; from 64 outputs up both orders ran alike)
SMALL_OUT_FEATURES = 16


def _plain_linear(m: nn.Module) -> bool:
    return type(m).forward is nn.Linear.forward and isinstance(m, nn.Linear) and "forward" not in m.__dict__


class BatchAxisStack:
    """Several grid points in one ordinary forward pass: the evaluation samples of every point one
    after another on the batch axis (point-major), each perturbed ``nn.Linear`` one batched GEMM of
    each point's samples with that point's weights.

    For models whose perturbed tensors all sit in plain ``nn.Linear`` layers (weight and bias; MLPs).
    The inputs are repeated once per point; a linear layer's input, (k * n, ..., in), is read as
    (k, n * ..., in) and multiplied by the (k, out, in) weights with ``baddbmm``, the bias added in
    the GEMM; a shared first layer (``SharedFirstLayer``) gives each point its rows from its terms.
    Unlike ``torch.func.vmap`` this adds no per-operation batching, and the GEMMs take the bias and
    the operand order that suit them: mlp-digits (360 samples, 2-core CPU, same process, interleaved)
    ran 77 and 100 us a point in passes of 16 and 32 points against 113 and 134 under ``vmap``; its
    21x21 surface 108 against 147 us a point.

    A model that mixes samples across the batch axis, splits the batch, or reads a linear layer's
    weight outside its forward computes other values. Every pass runs under ``PerSampleGuard``, which
    refuses any torch call on batch tensors not known to act on each row alone and any touch of a
    stacked weight outside ``_forward``; behind it, the evaluator uses this class only for models whose
    outputs per sample do not depend on the rest of the batch (``SpeedChoices._batch_independent`` with
    ``repeated=True``), ``_forward`` refuses an input whose first axis is not the pass's k × n rows, and
    points of the first pass are compared with single points (``SpeedChoices._verify_stacked``).
    Any of these sends the stacked passes to ``vmap``.
    """

    def __init__(self, forward: nn.Module, slots: list[tuple[dict, str, int]], shared: SharedFirstLayer | None):
        self.forward = forward
        self.slots = slots
        self.shared = shared
        self.linears = [m for m in forward.modules() if _plain_linear(m) and (shared is None or m is not shared.module)]
        self._inputs: dict[tuple, tuple] = {}
        self._kept_bytes = 0  # of the repeated inputs in _inputs
        self.rows = 0  # points × samples of the batch a pass runs now
        self.guard: PerSampleGuard | None = None  # the pass's (active)

    @classmethod
    def find(cls, forward: nn.Module, slots: list[tuple[dict, str, int]],
             shared: SharedFirstLayer | None) -> BatchAxisStack | None:
        """One for ``forward`` if every perturbed tensor (``slots``: (``module._parameters`` or
        ``_buffers``, key, layout index)) is the weight or bias of a plain ``nn.Linear`` or of the
        shared first layer; else None."""
        allowed = {id(m._parameters) for m in forward.modules() if _plain_linear(m)}
        if shared is not None:
            allowed.add(id(shared.module._parameters))
        if not slots or any(id(table) not in allowed or key not in ("weight", "bias") for table, key, _ in slots):
            return None
        return cls(forward, slots, shared)

    @staticmethod
    def fits(batches: list, k: int) -> bool:
        """Whether a pass of ``k`` points keeps its repeated inputs (every batch's, k copies each) within
        ``REPEATS_KEPT_BYTES``; a larger pass would copy its inputs again each time (a wide input, e.g.
        3072 features: 16-23x slower a point than under ``vmap``), so it runs under ``vmap``."""
        return k * sum(t.numel() * t.element_size() for xb, _ in batches for t in tensor_leaves(xb)) <= REPEATS_KEPT_BYTES

    def repeat(self, xb, k: int):
        """``xb`` (a tensor, tuple/list or dict of them, each with the batch first) with each leaf
        repeated ``k`` times along the batch axis, point-major; kept for the next pass of ``k`` while all
        kept together stay within ``REPEATS_KEPT_BYTES``."""
        leaves = tensor_leaves(xb)
        key = (k, *((t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype) for t in leaves))
        hit = self._inputs.get(key)
        if hit is not None:
            return hit[0]
        rep = tree_map(lambda t: t.repeat(k, *[1] * (t.dim() - 1)), xb)
        size = k * sum(t.numel() * t.element_size() for t in leaves)
        if self._kept_bytes + size > REPEATS_KEPT_BYTES:
            self._inputs.clear()
            self._kept_bytes = 0
        if size <= REPEATS_KEPT_BYTES:
            self._inputs[key] = (rep, xb)  # the source too: its address stays taken while the key is kept
            self._kept_bytes += size
        return rep

    @contextlib.contextmanager
    def active(self, parts: list[torch.Tensor], coords: torch.Tensor, guard: PerSampleGuard) -> Iterator[None]:
        """For one pass of ``len(coords)`` points: the module tensors of ``slots`` hold the stacked
        ``parts`` (each (k, *shape)), the linear layers run ``_forward``; per batch, ``batch`` gives the
        repeated inputs (the shared layer then gives each point's rows for them)."""
        saved = [table[key] for table, key, _ in self.slots]
        k = len(coords)
        try:
            for table, key, i in self.slots:
                table[key] = parts[i]
            for m in self.linears:
                m.__dict__["forward"] = functools.partial(self._forward, m, k)
            self.rows = 0  # set per batch by the caller: points × samples
            self.guard = guard
            if self.shared is not None:
                self.shared.stacked_coeffs, self.shared.guard = coords, guard
                self.shared.install()
            yield
        finally:
            self.guard = None
            if self.shared is not None:
                self.shared.uninstall()
                self.shared.stacked_coeffs, self.shared.repeated, self.shared.guard = None, {}, None
            for m in self.linears:
                m.__dict__.pop("forward", None)
            for (table, key, _), t in zip(self.slots, saved):
                table[key] = t

    def batch(self, xb, k: int):
        """The inputs of one batch for the pass now active: ``repeat(xb, k)``, the rows per layer input
        set for ``_forward`` and the guard, and the shared layer told which tensors repeat which."""
        with self.guard.trusted():
            rep = self.repeat(xb, k)
            if self.shared is not None:
                self.shared.repeated = {r.untyped_storage().data_ptr(): t
                                        for r, t in zip(tensor_leaves(rep), tensor_leaves(xb))}
        self.rows = k * batch_len(xb)
        self.guard.start_batch(rep, self.rows)
        return rep

    def _forward(self, m: nn.Linear, k: int, x: torch.Tensor) -> torch.Tensor:
        """``m`` on ``x`` (k * n, ..., in), each point's rows with its own weight and bias; raises
        ``ValueError`` for an input whose first axis is not the pass's k × n samples (a model that
        splits, merges or folds the batch: which rows are whose would be a guess)."""
        if x not in self.guard.tainted:
            raise ValueError(f"a pass of {k} points on the batch axis gave {m} an input not derived from the "
                             "batch")
        with self.guard.trusted():
            out = self._rows(m, k, x)
        self.guard.taint(out)
        return out

    def _rows(self, m: nn.Linear, k: int, x: torch.Tensor) -> torch.Tensor:
        w, b = m.weight, m.bias
        if w.dim() == 2 and (b is None or b.dim() == 1):  # not perturbed (frozen)
            return F.linear(x, w, b)
        if x.dim() < 2 or x.shape[0] != self.rows:
            raise ValueError(f"a pass of {k} points on the batch axis ({self.rows} rows) gave {m} an input of "
                             f"shape {tuple(x.shape)}")
        lead = x.shape[:-1]
        x3 = x.reshape(k, -1, x.shape[-1])
        w = w.expand(k, *w.shape) if w.dim() == 2 else w
        out_features = w.shape[1]
        if b is not None and b.dim() == 1:
            b = b.expand(k, out_features)
        if out_features <= SMALL_OUT_FEATURES:
            xt = x3.transpose(1, 2)
            out = (torch.bmm(w, xt) if b is None else torch.baddbmm(b[:, :, None], w, xt)).transpose(1, 2)
        else:
            wt = w.transpose(1, 2)
            out = torch.bmm(x3, wt) if b is None else torch.baddbmm(b[:, None, :], x3, wt)
        return out.reshape(*lead, out_features)


class NotPerSample(BaseException):
    """Raised by ``PerSampleGuard`` inside a batch-axis pass (a BaseException, so that a model catching
    ``Exception`` cannot swallow it; ``guard.violation`` keeps the reason in any case)."""


_UNARY = frozenset(["relu", "relu_", "relu6", "gelu", "tanh", "tanh_", "sigmoid", "sigmoid_", "silu", "mish", "elu", "selu", "celu", "leaky_relu", "softplus", "hardtanh", "hardswish", "hardsigmoid", "logsigmoid", "softsign", "tanhshrink", "abs", "neg", "exp", "log", "log1p", "sqrt", "rsqrt", "sin", "cos", "erf", "square", "clamp", "clamp_min", "clamp_max", "clip", "dropout", "contiguous", "float", "double", "half", "bfloat16", "to", "type_as", "clone", "detach", "__neg__", "__abs__", "__pos__"])
_BINARY = frozenset(["add", "sub", "mul", "div", "true_divide", "rsub", "maximum", "minimum", "pow", "add_", "sub_", "mul_", "div_", "__add__", "__radd__", "__iadd__", "__sub__", "__rsub__", "__isub__", "__mul__", "__rmul__", "__imul__", "__truediv__", "__rtruediv__", "__itruediv__", "__pow__", "__rpow__"])
_REDUCE = frozenset(["sum", "mean", "amax", "amin", "max", "min", "softmax", "log_softmax", "logsumexp", "norm", "var", "std", "prod", "cumsum", "cumprod", "argmax", "argmin", "any", "all", "normalize"])
_RESHAPE = frozenset(["view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "expand"])
_META = frozenset(["size", "dim", "numel", "__len__", "stride", "is_contiguous", "element_size", "is_floating_point", "storage_offset", "data_ptr"])
_PROPERTIES = frozenset(["shape", "dtype", "device", "ndim", "is_cuda", "requires_grad", "layout", "is_sparse", "grad_fn"])


class PerSampleGuard(TorchFunctionMode):
    """While a ``BatchAxisStack`` pass runs: every torch call on a tensor derived from the repeated inputs
    must act on each sample (row) alone, and nothing outside the stacked layers may touch a stacked
    weight; anything else raises ``NotPerSample``, and the pass runs under ``vmap`` instead.

    Conservative: only elementwise functions (with operands that broadcast without a batch axis of
    their own), reshapes keeping the batch axis first and whole, reductions, softmaxes and norms over
    other axes, products with a fixed matrix, concatenation along other axes of such tensors, indexing
    that keeps every row, and metadata queries count as per sample; a reduction over the batch or over
    everything (``h.abs().max()``), a Python ``bool`` or ``item`` of such a tensor, a row-sized tensor
    not derived from the inputs (``self.pos[:len(x)]``), or any other function is refused. The pass's
    own code (the stacked layers, the shared layer, the loss) runs ``trusted()``.
    """

    def __init__(self, stacked: list[torch.Tensor]):
        super().__init__()
        self.stacked = {id(t) for t in stacked}
        self._keep = stacked  # their ids stay theirs while the guard lives
        self.tainted = WeakIdKeyDictionary()
        self.rows = 0
        self._trusted = 0
        self.violation: str | None = None

    def start_batch(self, inputs, rows: int) -> None:
        self.rows = rows
        for t in tensor_leaves(inputs):
            self.tainted[t] = True

    def taint(self, out) -> None:
        for t in tensor_leaves(out):
            self.tainted[t] = True

    @contextlib.contextmanager
    def trusted(self) -> Iterator[None]:
        """The pass's own code: no torch-function dispatch at all (each call through this mode costs
        a few µs of Python; the stacked layers, shared layer and fused loss make ~35 a pass)."""
        self._trusted += 1
        try:
            with torch._C.DisableTorchFunction():
                yield
        finally:
            self._trusted -= 1

    def _refuse(self, why: str):
        self.violation = why
        raise NotPerSample(why)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self._trusted:
            return func(*args, **kwargs)
        name = getattr(func, "__name__", str(func))
        flat = tensor_leaves([list(args), dict(kwargs)])
        if any(id(t) in self.stacked for t in flat):
            self._refuse(f"{name}() read a stacked weight outside its layer")
        tainted = [t for t in flat if t in self.tainted]
        if not tainted:
            return func(*args, **kwargs)
        if name == "__get__":
            prop = getattr(getattr(func, "__self__", None), "__name__", "?")
            if prop in _PROPERTIES:
                return func(*args, **kwargs)
            self._refuse(f"the .{prop} of a batch tensor")
        if name in _META:
            return func(*args, **kwargs)
        self._check(name, args, kwargs, flat, tainted)
        out = func(*args, **kwargs)
        outs = tensor_leaves(list(out) if isinstance(out, tuple) else out)
        if any(o.dim() == 0 or o.shape[0] != self.rows for o in outs):
            self._refuse(f"{name}() gave a tensor without the batch's {self.rows} rows first")
        self.taint(outs)
        return out

    def _check(self, name, args, kwargs, flat, tainted) -> None:
        x = tainted[0]
        nd = max(t.dim() for t in tainted)
        others = [t for t in flat if t not in self.tainted]
        if any(t.dim() >= 1 and t.shape[0] == self.rows and t.dim() >= nd for t in others):
            self._refuse(f"{name}() combined the batch with a row-sized tensor not derived from it")
        if name in _UNARY:
            if others or (name == "dropout" and (kwargs.get("training", args[2] if len(args) > 2 else True))):
                self._refuse(f"{name}() with tensor arguments or in training mode")
            return
        if name in _BINARY:
            if any(t.dim() != nd for t in tainted):  # (rows, 1, F) + (rows, F) broadcasts rows against rows
                self._refuse(f"{name}() of batch tensors with different numbers of axes")
            if any(t.dim() > nd or (t.dim() == nd and t.shape[0] != 1) for t in others):
                self._refuse(f"{name}() broadcast another tensor over the batch axis")
            return
        if name in _REDUCE:
            at = 2 if name in ("norm", "normalize") else 1  # norm(x, p, dim), normalize(x, p, dim)
            dim = kwargs.get("dim", args[at] if len(args) > at and not isinstance(args[at], torch.Tensor) else None)
            dims = dim if isinstance(dim, (tuple, list)) else [dim]
            if dim is None or any(not isinstance(d, int) or d % x.dim() == 0 for d in dims) or others:
                self._refuse(f"{name}() over the batch axis or over everything")
            return
        if name in _RESHAPE or name in ("transpose", "swapaxes", "permute", "movedim"):
            if name in ("transpose", "swapaxes") and any(isinstance(a, int) and a % x.dim() == 0 for a in args[1:3]):
                self._refuse(f"{name}() moved the batch axis")
            if name == "permute":
                order = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
                if not order or order[0] % x.dim() != 0:
                    self._refuse("permute() moved the batch axis")
            if name == "movedim":
                self._refuse("movedim()")
            return  # the output's first axis is checked to be the batch's rows
        if name in ("matmul", "__matmul__", "mm", "linear"):
            if len(tainted) != 1 or args[0] is not x or not others or any(t.dim() > 2 for t in others):
                self._refuse(f"{name}() with the batch not as the left operand of a fixed matrix")
            return
        if name in ("cat", "concat", "concatenate", "stack"):
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            if dim % (x.dim() + (name == "stack")) == 0 or others:
                self._refuse(f"{name}() along the batch axis, or of tensors not derived from the batch")
            return
        if name == "__getitem__":
            idx = args[1] if isinstance(args[1], tuple) else (args[1],)
            if not (idx and isinstance(idx[0], slice) and idx[0] == slice(None)) or any(
                    isinstance(i, (torch.Tensor, list)) for i in idx):
                self._refuse("indexing that does not keep every row")
            return
        if name == "layer_norm":
            if len(args) < 2 or len(args[1]) >= x.dim():
                self._refuse("layer_norm() over the batch axis")
            return
        self._refuse(f"{name}() on a batch tensor (not known to act on each sample alone)")


def fused_values(loss_fn, metric_fns: dict, targets, fallback: Callable) -> Callable:
    """``(outputs, targets) -> tensor [loss, *metrics]`` for one batch: for the default loss
    (``metrics.DefaultLoss`` or a plain ``nn.CrossEntropyLoss``) on tensor logits, with no metric or the built-in accuracy, and integer class targets,
    a version with the same values up to rounding in about half the time; else ``fallback``.

    torch's ``log_softmax`` over a short last axis (10 classes) runs ~15x slower than over the first
    axis of the transposed logits, so the loss is taken there: ``-mean(log_softmax(out.T)[y, i])``.
    """
    from .metrics import DefaultLoss, accuracy

    plain_ce = type(loss_fn) is DefaultLoss or (
        type(loss_fn) is nn.CrossEntropyLoss and loss_fn.weight is None and loss_fn.reduction == "mean"
        and loss_fn.label_smoothing == 0.0 and loss_fn.ignore_index == -100)
    metrics = list(metric_fns.values())
    if not plain_ce or metrics not in ([], [accuracy]) or not isinstance(targets, torch.Tensor):
        return fallback
    if targets.dtype != torch.int64 or targets.dim() != 1 or len(targets) == 0 or int(targets.min()) < 0:
        return fallback  # one-hot or probability targets, ignore_index: the loss function itself
    with_accuracy = bool(metrics)

    def values(out, y: torch.Tensor) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or y.dim() != 1:  # e.g. a ModelOutput
            return fallback(out, y)
        loss = torch.log_softmax(out.T, 0).gather(0, y[None]).mean().neg()
        if with_accuracy:
            # max's indices are argmax's (the first of tied maxima, NaN counted as the maximum) in 3/4 of
            # its time on (points, samples, 10) logits
            return torch.stack([loss, (out.max(1).indices == y).float().mean()])
        return loss[None]

    def per_point(out, y: torch.Tensor, k: int) -> torch.Tensor | None:
        """The values of ``k`` points whose outputs are stacked on the batch axis (``BatchAxisStack``):
        (k, 1 + n_metrics); None where ``out`` is not (k * len(y), classes) logits."""
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or y.dim() != 1 or len(out) != k * len(y):
            return None
        o = out.reshape(k, len(y), -1).transpose(1, 2)  # (k, classes, samples): see above
        loss = F.cross_entropy(o, y.expand(k, -1), reduction="none").mean(1)
        if with_accuracy:
            return torch.stack([loss, (o.max(1).indices == y).float().mean(1)], 1)
        return loss[:, None]

    values.per_point = per_point
    return values


__all__ = ["BatchAxisStack", "NotPerSample", "PerSampleGuard", "SharedFirstLayer", "fused_values", "MAX_BASIS_ELEMENTS"]
