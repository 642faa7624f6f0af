"""Checks that the model, the loss and the metrics are functions of their inputs and weights alone.

A surface is a function of the weights only if nothing carries over from one grid point's
evaluation to the next: no buffer or attribute a forward updates, no inputs written in place, no
running average or first-call statistic in a loss or metric, no generator of their own. Each check
here runs on one small batch before any point (``Evaluator._validate``), compares against a second
run of the same calls in another order, and raises ``LandscapeError`` saying what it saw; what it
changes on the way (weights, attributes, closure variables, random generators) is put back.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import random
import types
from collections.abc import Callable, Mapping, MutableMapping

import numpy as np
import torch
from torch import nn

from .data import batch_len, call_model, tree_leaves, tree_map
from .errors import LandscapeError
from .params import restoring
from .tuning import _same_outputs


def _map_outputs(fn: Callable, out):
    """``out`` with ``fn`` applied to every floating tensor in it, keeping each container's type (tuples,
    named tuples, lists, dicts and ``ModelOutput``-like mappings, dataclasses), so that ``out.logits`` and
    the like still work on the result."""
    if isinstance(out, torch.Tensor):
        return fn(out) if out.is_floating_point() else out
    if isinstance(out, tuple):
        items = [_map_outputs(fn, v) for v in out]
        return type(out)(*items) if hasattr(out, "_fields") else type(out)(items)
    if isinstance(out, list):
        return [_map_outputs(fn, v) for v in out]
    if isinstance(out, Mapping):
        items = {k: _map_outputs(fn, v) for k, v in out.items()}
        try:
            return type(out)(**items)
        except Exception:  # noqa: BLE001 - a mapping type without keyword construction
            return items
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        return dataclasses.replace(out, **{f.name: _map_outputs(fn, getattr(out, f.name))
                                           for f in dataclasses.fields(out) if f.init})
    return out


def other_outputs(out, yb) -> list[tuple]:
    """(outputs, targets) pairs unlike the batch's ``(out, yb)``, for ``check_fns_stateless``, each with
    a copy of the targets (a function caching by the targets' identity is caught too) and values in the range
    of the outputs' own (a CUDA ``binary_cross_entropy`` asserts on values outside [0, 1]): the samples in
    reverse order, the last axis reversed (classes: another argmax), for (samples, classes) logits against class
    targets logits putting every sample right, for tensor outputs their first half, and last the batch itself
    again (a counter moves on any call). First of all, for tensor targets, the batch's first sample repeated
    to its size: statistics of the targets (class weights, a mean and spread) unlike the batch's, so one kept
    from a first call shows."""
    def targets():
        return tree_map(torch.clone, yb)

    others = [(_map_outputs(lambda t: t.flip(-1) if t.dim() else t, out), targets())]
    if isinstance(out, torch.Tensor) and isinstance(yb, torch.Tensor) and len(out) == len(yb) >= 2:
        others.insert(0, (out.flip(0), targets()))
        if (out.dim() == 2 and out.is_floating_point() and yb.dim() == 1 and yb.dtype == torch.int64
                and int(yb.min()) >= 0 and int(yb.max()) < out.shape[1]):
            others.append((torch.zeros_like(out).scatter_(1, yb[:, None], 1.0), targets()))
        h = len(yb) // 2
        others.append((out[:h], yb[:h].clone()))
    if isinstance(yb, torch.Tensor) and yb.dim() and len(yb) >= 2:
        n = len(yb)
        one = torch.zeros(n, dtype=torch.long, device=yb.device)
        repeated = _map_outputs(lambda t: t[one.to(t.device)] if t.dim() and len(t) == n else t, out)
        others.insert(0, (repeated, yb[one].clone()))
    others.append((out, targets()))
    return others


def run_checking_inputs(model: Callable, xb):
    """``call_model(model, xb)`` for a batch ``xb`` of the user's data (views of it), refusing a model that
    writes into its inputs (``x.sub_(...)`` in forward): every pass would see the data as the passes before
    it left them. Raises ``LandscapeError`` then, with the inputs' values put back, as also when the model
    writes and then raises (its exception propagates). Run it under the caller's eval mode and no_grad."""
    inputs = [(path, t, t.clone()) for path, t in tree_leaves(xb)]
    try:
        out = call_model(model, xb)
    finally:
        changed = [f"the inputs{path}" for path, t, before in inputs if not same_values(t, before)]
        if changed:
            with torch.no_grad():
                for _, t, before in inputs:
                    t.copy_(before)
    if changed:
        raise LandscapeError(
            f"the model ({type(model).__name__}) changed {', '.join(changed[:4])} in place when it ran (e.g. "
            "x.sub_(...) or x[...] = ... in forward); every pass would then see the data as the passes before it "
            "left them (and your tensors would change), so the values would not be a function of the weights; "
            "expected a forward that leaves its inputs alone: write x = x - ... instead (your data are as they "
            "were)")
    return out


@contextlib.contextmanager
def seeding(out):
    """A ``seed()`` that sets torch's (CPU, and the GPUs ``out``'s tensors are on), NumPy's and Python's
    global generators to one state, for calls that must see the same random numbers; each generator is
    put back as it was on exit."""
    devices = sorted({t.device for _, t in tree_leaves(out) if t.is_cuda}, key=str)

    def seed() -> None:
        torch.default_generator.manual_seed(0)
        for dev in devices:
            torch.cuda.default_generators[dev.index if dev.index is not None else 0].manual_seed(0)
        np.random.seed(0)
        random.seed(0)

    states = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=devices):
            yield seed
    finally:
        np.random.set_state(states[0])
        random.setstate(states[1])


def nudge(model: nn.Module) -> None:
    """Move every floating parameter of ``model`` by about 1 % of its mean magnitude (plus 1e-3, for
    all-zero biases), from a fixed seed; the caller puts them back (``params.restoring``)."""
    params = [p for p in model.parameters() if p.is_floating_point() and p.numel()]
    noise = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(0)).split(
        [p.numel() for p in params])
    with torch.no_grad():
        for p, z in zip(params, noise):
            p.add_(z.view(p.shape).to(device=p.device, dtype=p.dtype) * (0.01 * float(p.detach().abs().mean()) + 1e-3))


def identical_outputs(a, b) -> bool:
    """Whether two outputs hold the same floating tensors bit for bit (and at least one)."""
    la, lb = tree_leaves(a), tree_leaves(b)
    floats = [(x, y) for (_, x), (_, y) in zip(la, lb) if x.is_floating_point()]
    return (len(la) == len(lb) and bool(floats)
            and all(x.shape == y.shape and torch.equal(x, y) for x, y in floats))


def same_tree_outputs(a, b) -> bool:
    """Outputs of any form alike: the same floating and integer tensors at the same places, to 1e-5
    (``tuning._same_outputs``; NaN at the same places); outputs without tensors count as alike."""
    la, lb = tree_leaves(a), tree_leaves(b)
    if [p for p, _ in la] != [p for p, _ in lb]:
        return False
    for (_, x), (_, y) in zip(la, lb):
        if x.shape != y.shape:
            return False
        if x.is_floating_point() or x.is_complex():
            if not _same_outputs(x.detach().double(), y.detach().double(), rtol=1e-5):
                return False
        elif not torch.equal(x, y):
            return False
    return True


class StateSnapshot:
    """The plain state of a model, loss or metric as it is now, to see which state a call set and to put
    it back. Looked at: for a module, every submodule's attributes (what ``nn.Module`` itself keeps
    aside, parameters, buffers, submodules and hooks, is checked elsewhere); for a callable object, its
    attributes; for a function, what its closure holds and its own attributes; a bound method's object
    and function, a ``functools.partial``'s function. Each value is compared by identity (rebound or
    deleted names, names added) and by contents where it can change in place: tensors up to 2**20
    elements (copied), lists, dicts and sets, and the fields of a plain helper object (one level down).
    Not seen: state deeper than that, in a module-level global or in a tensor over 2**20 elements."""

    _OWN = frozenset(nn.Module().__dict__) | {"forward", "_compiled_call_impl"}

    def __init__(self, obj):
        #: (dotted prefix, namespace, {name: (value, contents)})
        self.spaces = [(label, space, {k: (v, self._contents(v)) for k, v in space.items() if k not in skip}, skip)
                       for label, space, skip in _namespaces(obj)]

    @staticmethod
    def _contents(v):
        if isinstance(v, torch.Tensor):
            return v.detach().clone() if v.numel() <= 2**20 else None
        if isinstance(v, (list, dict, set)):
            return copy.copy(v)
        if StateSnapshot._plain_object(v):  # a helper object's own fields (one level)
            return dict(vars(v))
        return None

    @staticmethod
    def _plain_object(v) -> bool:
        return (hasattr(v, "__dict__") and not isinstance(v, (nn.Module, torch.Tensor, type)) and not callable(v)
                and isinstance(vars(v), dict))

    @staticmethod
    def _same(v, old, contents) -> bool:
        if v is not old:
            return False
        if isinstance(v, torch.Tensor):
            return contents is None or (v.shape == contents.shape and same_values(v.detach(), contents))
        if isinstance(v, list):
            return len(v) == len(contents) and all(x is y for x, y in zip(v, contents))
        if isinstance(v, dict):
            return v.keys() == contents.keys() and all(v[k] is contents[k] for k in v)
        if isinstance(v, set):
            return v == contents
        if isinstance(contents, dict) and StateSnapshot._plain_object(v):
            now = vars(v)
            return now.keys() == contents.keys() and all(now[k] is contents[k] for k in now)
        return True

    def changed(self) -> list[str]:
        """Dotted names of the attributes (closure variables) that differ from the snapshot now."""
        out = []
        for label, space, attrs, skip in self.spaces:
            now = {k: v for k, v in space.items() if k not in skip}
            for k in list(attrs) + [k for k in now if k not in attrs]:
                if k not in now or k not in attrs or not self._same(now[k], *attrs[k]):
                    out.append(f"{label}.{k}" if label else k)
        return out

    def restore(self) -> None:
        """Every attribute (closure variable) back as in the snapshot."""
        for _, space, attrs, skip in self.spaces:
            for k in [k for k in space if k not in skip and k not in attrs]:
                del space[k]
            for k, (old, contents) in attrs.items():
                if k in space and self._same(space[k], old, contents):
                    continue
                space[k] = old
                if isinstance(old, torch.Tensor) and contents is not None and old.shape == contents.shape:
                    with torch.no_grad():
                        old.copy_(contents)
                elif isinstance(old, list):
                    old[:] = contents
                elif isinstance(old, (dict, set)):
                    old.clear()
                    old.update(contents)
                elif isinstance(contents, dict) and self._plain_object(old):
                    vars(old).clear()
                    vars(old).update(contents)


class _Cells(MutableMapping):
    """A function's closure as a mapping, free variable name -> what its cell holds (empty cells left out)."""

    def __init__(self, fn: types.FunctionType):
        self.cells = dict(zip(fn.__code__.co_freevars, fn.__closure__ or ()))

    def __getitem__(self, name):
        try:
            return self.cells[name].cell_contents
        except ValueError:  # an empty cell
            raise KeyError(name) from None

    def __setitem__(self, name, value) -> None:
        self.cells[name].cell_contents = value

    def __delitem__(self, name) -> None:
        del self.cells[name].cell_contents

    def __iter__(self):
        return iter([name for name in self.cells if name in self])

    def __contains__(self, name) -> bool:
        try:
            self[name]
        except KeyError:
            return False
        return True

    def __len__(self) -> int:
        return len(list(iter(self)))


def _namespaces(obj, label: str = "", depth: int = 0) -> list[tuple[str, MutableMapping, frozenset]]:
    """(dotted prefix, namespace, names to leave out) for each place ``obj`` keeps plain state (``StateSnapshot``)."""
    if depth > 2:
        return []
    if isinstance(obj, nn.Module):
        return [(f"{label}.{name}".strip(".") if name else label, m.__dict__, StateSnapshot._OWN)
                for name, m in obj.named_modules()]
    if isinstance(obj, functools.partial):
        return _namespaces(obj.func, label, depth + 1)
    if isinstance(obj, types.MethodType):
        return _namespaces(obj.__self__, label, depth + 1) + _namespaces(obj.__func__, label, depth + 1)
    if isinstance(obj, types.FunctionType):
        return [(label, _Cells(obj), frozenset()), (label, obj.__dict__, frozenset())]
    if callable(obj) and isinstance(getattr(obj, "__dict__", None), dict) and not isinstance(obj, type):
        return [(label, vars(obj), frozenset())]
    return []


def same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal element by element, NaN equal to NaN."""
    if torch.equal(a, b):
        return True
    return a.is_floating_point() and a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


def check_fns_stateless(out, yb, fns: dict[str, Callable], snaps: dict[str, StateSnapshot]) -> None:
    """Refuse a loss or metric that keeps state between calls (a running average, a call counter, class
    weights taken from the first targets it saw): each grid point's value would then depend on the points
    evaluated before it. Each ``fns[what]`` is called on the batch ``(out, yb)`` as it was before its first
    call (``snaps[what]``, taken then); again from there, on other outputs first (``other_outputs``: values
    it must tell apart, e.g. every sample right and every sample wrong for an accuracy), then on the batch,
    from the same random-number state both times (a loss that samples, e.g. a VAE's ELBO, is allowed); the
    two values on the batch must agree to 1e-5 (a CUDA loss summing with atomics may differ by rounding).
    Outputs of any form (a VAE's (recon, mu, logvar), a ``ModelOutput``). Each function is left as before
    its first call and every generator seeded put back as it was. Raises ``LandscapeError`` naming the
    function, both values and the state it set."""
    others = other_outputs(out, yb)
    with torch.no_grad(), seeding(out) as seed:
        for what, fn in fns.items():
            snap = snaps.get(what) or StateSnapshot(None)
            try:
                snap.restore()
                seed()
                first = float(fn(out, yb))
            except Exception:  # noqa: BLE001 - validated apart (a metric of another form, say)
                snap.restore()
                continue
            snap.restore()  # the other outputs come first now: what it keeps from its first call shows
            for o, t in others:
                try:
                    fn(o, t)
                except Exception:  # noqa: BLE001, S110 - e.g. a metric of one output form only
                    pass
            changed = snap.changed()
            seed()
            try:
                again = float(fn(out, yb))
            finally:
                snap.restore()
            if not (math.isclose(first, again, rel_tol=1e-5, abs_tol=1e-12)
                    or (math.isnan(first) and math.isnan(again))):
                kept = f" (it changed its {', '.join(changed[:4])} when it ran)" if changed else ""
                raise LandscapeError(
                    f"{what} returned {first:.6g} on a batch, then {again:.6g} on the same outputs and targets "
                    f"when other outputs came first{kept}: it keeps state between calls (e.g. a running "
                    "average, a counter, or something taken from the first outputs or targets it saw, such as "
                    "class weights) or draws from a random generator of its own, so each grid point's value "
                    "would depend on the points evaluated before it; expected a function of (outputs, targets) "
                    "alone (compute class weights from the whole data beforehand and pass them in; a loss that "
                    "samples may draw from torch's, NumPy's or Python's global generator)")


def check_model_stateless(model: nn.Module, xb, out, snap: StateSnapshot) -> None:
    """Refuse a model that keeps state between calls outside its buffers (checked apart): a statistic of
    the data cached in an attribute on its first call, its previous outputs, a counter. With its
    attributes as they were before its first call (``snap``), it runs on the batch ``xb``;
    at other weights (``nudge``: ~1 %) on ``xb``, where its outputs must change (a memo keyed on ``id(x)``
    gives the same); there, as before its first call, on other samples (the first half of ``xb``, repeated
    to its size); then at its weights on ``xb`` once more, from the same random state each time (a model
    that samples from torch's, NumPy's or Python's global generator runs): the two outputs on ``xb`` at
    its weights must agree to 1e-5. Weights and attributes are put back after, so the model is left as it
    was given (a cache it builds from its input's shape, e.g. rotary embeddings, passes). ``out`` (the
    first call's) gives which GPUs to seed. Not seen: state deeper than a helper object's own fields, in a
    module-level dict, in a tensor over 2**20 elements changed in place, or a counter that acts after many
    calls."""
    n = batch_len(xb)
    if n < 2:
        return
    other = tree_map(lambda t: t[torch.arange(n, device=t.device) % (n // 2)], xb)
    changed = snap.changed()
    try:
        with seeding(out) as seed:
            snap.restore()
            with restoring(model):  # entered as before any call: what the calls cache stays after it
                seed()
                want = call_model(model, xb)
                nudge(model)
                seed()
                moved = call_model(model, xb)  # other weights: other outputs, unless remembered
                snap.restore()
                seed()
                call_model(model, other)  # a first call again, on other samples at other weights
            seed()
            got = call_model(model, xb)
    except Exception:  # noqa: BLE001 - e.g. a model that needs other batch sizes: not checked here
        return
    finally:
        changed += [a for a in snap.changed() if a not in changed]
        snap.restore()
    if identical_outputs(want, moved):
        raise LandscapeError(
            f"the model ({type(model).__name__}) gave the very same outputs on {n} samples after all its "
            "weights moved by about 1 %: it returns outputs it remembers (e.g. a cache keyed on the input, "
            "id(x) or x.data_ptr()) instead of computing them from its weights, so every grid point would "
            "show the first one's values; expected a forward computed from its weights at each call")
    if same_tree_outputs(want, got):
        return
    kept = f" (it set the attribute(s) {', '.join(changed[:4])} when it ran)" if changed else ""
    raise LandscapeError(
        f"the model ({type(model).__name__}) gave other outputs on the same {n} samples after a call on "
        f"other samples{kept}: it keeps state between calls (e.g. a statistic of the data or of its weights "
        "cached on its first call, or its previous outputs) or draws from a random generator of its own, so each grid point's value "
        "would depend on what ran before it; expected a forward that depends on its weights and inputs alone "
        "(compute such statistics beforehand and register them as buffers, which are saved with the model; a "
        "model that samples may draw from torch's, NumPy's or Python's global generator)")
