"""Checks that the model, the loss and the metrics are functions of their inputs and weights alone.

A surface is a function of the weights only if nothing carries over from one grid point's
evaluation to the next: no buffer or attribute a forward updates, no inputs written in place, no
running average or first-call statistic in a loss or metric, no generator of their own. Each check
here runs on one small batch before any point (``Evaluator._validate``), compares against a second
run of the same calls in another order, and raises ``LandscapeError`` saying what it saw; what it
changes on the way (weights, attributes, closure variables, random generators) is put back.
"""
from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import functools
import math
import random
import types
import warnings
from collections.abc import Callable, Mapping, MutableMapping

import numpy as np
import torch
from torch import nn

from .data import batch_len, call_model, tree_leaves, tree_map
from .errors import LandscapeError, one_line, user_frame
from .params import restoring
from .tuning import _same_outputs


def map_outputs(fn: Callable, out, *, every_tensor: bool = False):
    """``out`` with ``fn`` applied to every floating tensor in it, keeping each container's type (tuples,
    named tuples, lists, dicts and ``ModelOutput``-like mappings, dataclasses), so that ``out.logits`` and
    the like still work on the result. ``every_tensor``: to every tensor (slicing outputs into parts: a boolean
    mask the model returns beside its logits stayed whole, and the loss masking them failed, re-trial s46)."""
    if isinstance(out, torch.Tensor):
        return fn(out) if every_tensor or out.is_floating_point() else out
    if isinstance(out, tuple):
        items = [map_outputs(fn, v, every_tensor=every_tensor) for v in out]
        return type(out)(*items) if hasattr(out, "_fields") else type(out)(items)
    if isinstance(out, list):
        return [map_outputs(fn, v, every_tensor=every_tensor) for v in out]
    if isinstance(out, Mapping):
        items = {k: map_outputs(fn, v, every_tensor=every_tensor) for k, v in out.items()}
        try:
            return type(out)(**items)
        except Exception:  # noqa: BLE001 - a mapping type without keyword construction
            return items
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        return dataclasses.replace(out, **{f.name: map_outputs(fn, getattr(out, f.name), every_tensor=every_tensor)
                                           for f in dataclasses.fields(out) if f.init})
    fields = attributes(out)
    if fields:  # a SimpleNamespace or a plain class holding the outputs (trial s41)
        moved = copy.copy(out)
        for k, v in fields.items():
            setattr(moved, k, map_outputs(fn, v, every_tensor=every_tensor))
        return moved
    return out


def attributes(out) -> dict | None:
    """The attributes of an output object that is no tensor nor container: a dataclass's fields, or the instance
    attributes (``__slots__`` too) of a ``SimpleNamespace`` or a plain class (a model's own output type, ``.loss``
    among them); None for others. The batch checks read such outputs through them: they found no tensor in a
    SimpleNamespace, took the model for random and left an in-batch contrastive loss averaged over batches
    unwarned (trial s41)."""
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        return {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    if isinstance(out, (torch.Tensor, Mapping, tuple, list, str, bytes, type, nn.Module)) or callable(out):
        return None
    slots = [n for c in type(out).__mro__ for n in getattr(c, "__slots__", ()) if isinstance(n, str)]
    fields = {n: getattr(out, n) for n in slots if n not in ("__dict__", "__weakref__") and hasattr(out, n)}
    fields.update(vars(out) if hasattr(out, "__dict__") else {})  # a class with __slots__ too (re-trial s41)
    return fields or None


def _as_tree(out):
    """``out``, or an output object's attributes (`attributes`) as a dict, for the pytree walkers."""
    fields = attributes(out)
    return out if fields is None else fields


def other_outputs(out, yb) -> list[tuple]:
    """(outputs, targets) pairs unlike the batch's ``(out, yb)``, for ``check_fns_stateless``, each with
    a copy of the targets (a function caching by the targets' identity is caught too) and values in the range
    of the outputs' own (a CUDA ``binary_cross_entropy`` asserts on values outside [0, 1]): the samples in
    reverse order, the last axis reversed (classes: another argmax), for (samples, classes) logits against class
    targets logits putting every sample right, for tensor outputs their first half, and last the batch itself
    again (a counter moves on any call)."""
    def targets():
        return tree_map(torch.clone, yb)

    others = [(map_outputs(lambda t: t.flip(-1) if t.dim() else t, out), targets())]
    if isinstance(out, torch.Tensor) and isinstance(yb, torch.Tensor) and len(out) == len(yb) >= 2:
        others.insert(0, (out.flip(0), targets()))
        if (out.dim() == 2 and out.is_floating_point() and yb.dim() == 1 and yb.dtype == torch.int64
                and int(yb.min()) >= 0 and int(yb.max()) < out.shape[1]):
            others.append((torch.zeros_like(out).scatter_(1, yb[:, None], 1.0), targets()))
        h = len(yb) // 2
        others.append((out[:h], yb[:h].clone()))
    others.append((out, targets()))
    return others


def other_first_call(out, yb) -> tuple | None:
    """An (outputs, targets) pair for ``check_fns_stateless`` whose statistics differ from the batch
    ``(out, yb)``'s, so that what a function keeps from its first call shows: the outputs scaled by 1/4
    (another spread; probabilities stay in [0, 1]) against, for class indices, every class in turn
    (``arange % classes`` in the targets' shape: other class counts, and several classes where the batch
    holds one, as in data sorted by class, which leaves a class-weighted mean unchanged) or, for floating
    targets, ``1 - yb`` (another mean); for other tensor targets, the first sample repeated. None for
    targets that are no tensor of two samples or more."""
    if not isinstance(yb, torch.Tensor) or not yb.dim() or len(yb) < 2:
        return None
    scaled = map_outputs(lambda t: t * 0.25, out)
    if yb.is_floating_point():
        return scaled, 1 - yb
    if yb.dtype == torch.int64 and bool((yb >= 0).any()):
        kept = yb >= 0  # -100 and other negative ignore indices stay
        classes = max(int(yb[kept].max()) + 1, 2)
        if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[1] > int(yb[kept].max()):
            classes = out.shape[1]
        every = torch.arange(yb.numel(), device=yb.device).view_as(yb) % classes
        return scaled, torch.where(kept, every, yb)
    n = len(yb)
    one = torch.zeros(n, dtype=torch.long, device=yb.device)
    return map_outputs(lambda t: t[one.to(t.device)] if t.dim() and len(t) == n else t, out), yb[one].clone()


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
    la, lb = tree_leaves(_as_tree(a)), tree_leaves(_as_tree(b))
    floats = [(x, y) for (_, x), (_, y) in zip(la, lb) if x.is_floating_point()]
    return (len(la) == len(lb) and bool(floats)
            and all(x.shape == y.shape and torch.equal(x, y) for x, y in floats))


def same_tree_outputs(a, b) -> bool:
    """Outputs of any form alike: the same floating and integer tensors at the same places, to 1e-5
    (``tuning._same_outputs``; NaN at the same places); outputs without tensors count as alike."""
    la, lb = tree_leaves(_as_tree(a)), tree_leaves(_as_tree(b))
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
    it back (``_namespaces`` says where it looks): every submodule's attributes and buffers (parameters,
    submodules and hooks are left out), a callable object's attributes and its class's data attributes,
    a function's closure variables, own attributes, default arguments and the module-level names its code
    reads, a bound method's object and function, a ``functools.partial``'s keywords and function; and
    the same for the modules, functions and helper objects those hold, three levels down. Each value is
    compared by identity (rebound or deleted names, names added) and by contents where it can change in
    place: tensors up to 2**20 elements (copied), lists, dicts and sets, the fields of a plain helper
    object, and how many results a ``functools.lru_cache``'d helper holds (cleared again if it held none).
    Not seen: state deeper than that, in globals reached only through another module, in a tensor over
    2**20 elements, or in a helper of a library (torch, NumPy, scikit-learn, ...)."""

    _OWN = frozenset(nn.Module().__dict__) | {"forward", "_compiled_call_impl"}

    def __init__(self, obj):
        #: (dotted prefix, namespace, {name: (value, contents)}, names left out)
        try:
            self.spaces = [(label, space, {k: (v, self._contents(v)) for k, v in space.items() if k not in skip},
                            skip) for label, space, skip in _namespaces(obj)]
        except Exception:  # noqa: BLE001 - an object that cannot be looked at: nothing of it is checked
            self.spaces = []

    @staticmethod
    def _contents(v):
        if _lru_cache(v):  # a functools.lru_cache'd helper: how many results it holds (put back if none)
            return v.cache_info().currsize
        if isinstance(v, torch.Tensor):
            return v.detach().clone() if v.numel() <= 2**20 else None
        if isinstance(v, np.ndarray):
            return v.copy() if v.size <= 2**20 else None
        if isinstance(v, (list, dict, set, collections.deque)):
            return copy.copy(v) if len(v) <= BIG_CONTAINER else _Size(len(v))
        if StateSnapshot._plain_object(v):  # a helper object's own fields (one level)
            return dict(vars(v))
        if isinstance(v, tuple) and len(v) <= BIG_CONTAINER:  # a (named) tuple's lists, dicts, tensors
            return _Items(tuple((x, StateSnapshot._contents(x)) for x in v))
        return None

    @staticmethod
    def _plain_object(v) -> bool:
        return (_own_dict(v) is not None and not isinstance(v, (nn.Module, torch.Tensor, type)) and not callable(v))

    @staticmethod
    def _same(v, old, contents) -> bool:
        if v is not old:
            return False
        if isinstance(contents, _Size):
            return len(v) == contents.n
        if _lru_cache(v):
            return v.cache_info().currsize == contents
        if isinstance(v, torch.Tensor):
            return contents is None or (v.shape == contents.shape and same_values(v.detach(), contents))
        if isinstance(v, np.ndarray):
            return contents is None or (v.shape == contents.shape and _same_array(v, contents))
        if isinstance(v, (list, collections.deque)):
            return len(v) == len(contents) and all(x is y for x, y in zip(v, contents))
        if isinstance(v, dict):
            return v.keys() == contents.keys() and all(v[k] is contents[k] for k in v)
        if isinstance(v, set):
            return v == contents
        if isinstance(contents, dict) and StateSnapshot._plain_object(v):
            now = vars(v)
            return now.keys() == contents.keys() and all(now[k] is contents[k] for k in now)
        if isinstance(contents, _Items):
            return all(StateSnapshot._same(x, old_x, c) for x, (old_x, c) in zip(v, contents.items))
        return True

    def changed(self) -> list[str]:
        """Dotted names of the attributes (closure variables) that differ from the snapshot now."""
        out = []
        for label, space, attrs, skip in self.spaces:
            now = {k: v for k, v in space.items() if k not in skip}
            for k in list(attrs) + [k for k in now if k not in attrs]:
                if k not in now or k not in attrs or not self._same(now[k], *attrs[k]):
                    out.append(f"{label}.{k}" if label else k)
        return list(dict.fromkeys(out))  # a global two functions read is one name

    def restore(self) -> None:
        """Every attribute (closure variable) back as in the snapshot."""
        for _, space, attrs, skip in self.spaces:
            for k in [k for k in space if k not in skip and k not in attrs]:
                del space[k]
            for k, (old, contents) in attrs.items():
                if k in space and self._same(space[k], old, contents):
                    continue
                space[k] = old
                self._put_back(old, contents)

    @classmethod
    def _put_back(cls, old, contents) -> None:
        """``old``'s contents as ``_contents`` recorded them, in place."""
        if isinstance(contents, _Size):  # too large to copy: rebound names only
            return
        if _lru_cache(old):
            if contents == 0:
                old.cache_clear()
        elif isinstance(old, torch.Tensor) and contents is not None and old.shape == contents.shape:
            with torch.no_grad():
                old.copy_(contents)
        elif isinstance(old, np.ndarray) and contents is not None and old.shape == contents.shape:
            old[...] = contents
        elif isinstance(old, list):
            old[:] = contents
        elif isinstance(old, collections.deque):
            old.clear()
            old.extend(contents)
        elif isinstance(old, (dict, set)):
            old.clear()
            old.update(contents)
        elif isinstance(contents, dict) and cls._plain_object(old):
            vars(old).clear()
            vars(old).update(contents)
        elif isinstance(contents, _Items):  # a tuple's elements, changed in place
            for x, (old_x, c) in zip(old, contents.items):
                if x is old_x and not cls._same(x, old_x, c):
                    cls._put_back(x, c)


class _Names(MutableMapping):
    """A mapping over ``self.names`` whose ``__getitem__`` raises KeyError for a name that holds nothing now."""

    names: list

    def __iter__(self):
        return iter([name for name in self.names if name in self])

    def __contains__(self, name) -> bool:
        try:
            self[name]
        except KeyError:
            return False
        return True

    def __len__(self) -> int:
        return len(list(iter(self)))


class _Cells(_Names):
    """A function's closure as a mapping, free variable name -> what its cell holds (empty cells left out)."""

    def __init__(self, fn: types.FunctionType):
        self.cells = dict(zip(fn.__code__.co_freevars, fn.__closure__ or ()))
        self.names = list(self.cells)

    def __getitem__(self, name):
        try:
            return self.cells[name].cell_contents
        except ValueError:  # an empty cell
            raise KeyError(name) from None

    def __setitem__(self, name, value) -> None:
        self.cells[name].cell_contents = value

    def __delitem__(self, name) -> None:
        del self.cells[name].cell_contents



class _Globals(_Names):
    """The module-level names a function's code reads (nested functions' too) that hold values, as a mapping
    name -> value of its globals (modules, functions and classes left out)."""

    def __init__(self, fn: types.FunctionType):
        self.space = fn.__globals__
        names, codes = set(), [fn.__code__]
        while codes:
            code = codes.pop()
            names.update(code.co_names)
            codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
        self.names = sorted(n for n in names if n in self.space and _holds_state(self.space[n]))
        #: the user's own functions it calls by global name (followed: a helper's cache), and classes it reads
        self.functions = [self.space[n] for n in sorted(names) if n in self.space
                          and isinstance(self.space[n], types.FunctionType) and _user_code(self.space[n])]
        self.classes = [self.space[n] for n in sorted(names) if n in self.space
                        and isinstance(self.space[n], type) and _user_class(self.space[n])]

    def __getitem__(self, name):
        if name not in self.names or name not in self.space:
            raise KeyError(name)
        return self.space[name]

    def __setitem__(self, name, value) -> None:
        self.space[name] = value

    def __delitem__(self, name) -> None:
        del self.space[name]


class _Defaults(MutableMapping):
    """A function's default argument values (``def f(out, t, cache={})``), by parameter name."""

    def __init__(self, fn: types.FunctionType):
        self.fn = fn
        code = fn.__code__
        positional = code.co_varnames[:code.co_argcount]
        self.names = list(positional[len(positional) - len(fn.__defaults__ or ()):])

    def __getitem__(self, name):
        if name in self.names:
            return self.fn.__defaults__[self.names.index(name)]
        return (self.fn.__kwdefaults__ or {})[name]

    def __setitem__(self, name, value) -> None:
        if name in self.names:
            values = list(self.fn.__defaults__)
            values[self.names.index(name)] = value
            self.fn.__defaults__ = tuple(values)
        else:
            self.fn.__kwdefaults__[name] = value

    def __delitem__(self, name) -> None:
        raise KeyError(name)  # defaults are never added or removed by a call

    def __iter__(self):
        return iter(self.names + list(self.fn.__kwdefaults__ or {}))

    def __len__(self) -> int:
        return len(self.names) + len(self.fn.__kwdefaults__ or {})


class _ClassAttributes(_Names):
    """The data attributes of a user's class (a cache shared by its instances), by name; methods,
    properties and dunder names left out."""

    def __init__(self, cls: type):
        self.cls = cls
        self.names = [k for k, v in vars(cls).items() if not k.startswith("__") and _holds_state(v)
                      and not isinstance(v, (staticmethod, classmethod, property))]

    def __getitem__(self, name):
        if name not in self.names:
            raise KeyError(name)
        return vars(self.cls)[name]

    def __setitem__(self, name, value) -> None:
        setattr(self.cls, name, value)

    def __delitem__(self, name) -> None:
        raise KeyError(name)


#: lists, dicts, sets and deques larger than this are compared by their size only (a 1M-entry dict a loss
#: only reads cost 17 s of entry-by-entry comparisons), and not put back in place
BIG_CONTAINER = 4096


@dataclasses.dataclass(frozen=True)
class _Size:
    n: int


@dataclasses.dataclass(frozen=True)
class _Items:
    """A tuple's elements and their contents (``StateSnapshot._contents``)."""
    items: tuple


def _lru_cache(v) -> bool:
    return isinstance(v, _LRU_TYPES)


_LRU_TYPES = tuple(t for t in (getattr(functools, "_lru_cache_wrapper", None),) if isinstance(t, type))


def _own_dict(v) -> dict | None:
    """``vars(v)`` when it is a plain dict; None for objects without one (or whose attribute lookup raises:
    a dict subclass with ``__getattr__ = dict.__getitem__``)."""
    try:
        d = vars(v)
    except Exception:  # noqa: BLE001 - TypeError, or whatever a __getattr__ of the user's raises
        return None
    return d if isinstance(d, dict) else None


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    try:
        return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    except Exception:  # noqa: BLE001 - object arrays whose elements do not compare
        return True


def _holds_state(v) -> bool:
    """Whether a global, a class attribute or a closure variable can hold data (not code or a module)."""
    return not isinstance(v, (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type,
                              types.MethodType, functools.partial))


_LIBRARIES = ("builtins", "torch", "landscape_nb", "functools", "numpy", "scipy", "sklearn", "transformers")


def _user_class(cls: type) -> bool:
    return str(cls.__module__).split(".")[0] not in _LIBRARIES


def _user_code(fn) -> bool:
    return str(getattr(fn, "__module__", None)).split(".")[0] not in _LIBRARIES


def _namespaces(obj, label: str = "", depth: int = 0, seen: set | None = None) -> list[tuple[str, MutableMapping, frozenset]]:
    """(dotted prefix, namespace, names to leave out) for each place ``obj`` keeps plain state
    (``StateSnapshot``), following what it holds (submodules, a closure's or an attribute's objects,
    functions, a partial's function) up to three levels down."""
    seen = set() if seen is None else seen
    if depth > 3 or id(obj) in seen or obj is None:
        return []
    seen.add(id(obj))
    spaces: list = []
    if isinstance(obj, nn.Module):
        for name, m in obj.named_modules():
            prefix = ".".join(p for p in (label, name) if p)
            spaces.append((prefix, m.__dict__, StateSnapshot._OWN))
            if type(m._buffers) is dict:  # a ScriptModule's are torch's own mapping
                spaces.append((prefix, m._buffers, frozenset()))
            if _user_class(type(m)) and id(type(m)) not in seen:
                seen.add(id(type(m)))
                spaces.append((type(m).__name__, _ClassAttributes(type(m)), frozenset()))
                forward = vars(type(m)).get("forward")
                if isinstance(forward, types.FunctionType):  # the globals and defaults its forward reads
                    spaces += [sp for sp in _namespaces(forward, prefix, depth + 1, seen) if sp[1] is not forward.__dict__]
        return spaces
    if isinstance(obj, functools.partial):
        return [(label, obj.keywords, frozenset())] + _namespaces(obj.func, label, depth + 1, seen)
    if isinstance(obj, types.MethodType):
        return _namespaces(obj.__self__, label, depth + 1, seen) + _namespaces(obj.__func__, label, depth + 1, seen)
    if isinstance(obj, types.FunctionType):
        if not _user_code(obj):
            return []
        cells, names = _Cells(obj), _Globals(obj)
        spaces = [(label, cells, frozenset()), (label, obj.__dict__, frozenset()), (label, names, frozenset()),
                  (label, _Defaults(obj), frozenset())]
        for cls in names.classes:  # a class of the user's its code reads by name (Config.scale = ...)
            if id(cls) not in seen:
                seen.add(id(cls))
                spaces.append((cls.__name__, _ClassAttributes(cls), frozenset()))
        held = list(cells.values()) + list(names.values()) + names.functions
    elif _own_dict(obj) is not None and not isinstance(obj, (type, torch.Tensor)):
        spaces = [(label, vars(obj), frozenset())]
        if _user_class(type(obj)) and id(type(obj)) not in seen:
            seen.add(id(type(obj)))
            spaces.append((type(obj).__name__, _ClassAttributes(type(obj)), frozenset()))
        held = list(vars(obj).values())
    elif _slot_names(obj) and _user_class(type(obj)):
        slots = _Slots(obj)
        spaces, held = [(label, slots, frozenset())], list(slots.values())
    else:
        return []
    for v in held:  # what it holds: a module, a function, a helper object
        if isinstance(v, (nn.Module, types.FunctionType, types.MethodType, functools.partial)) or (
                not isinstance(v, (type, torch.Tensor)) and (_own_dict(v) is not None or _slot_names(v))):
            spaces += _namespaces(v, label, depth + 1, seen)
    return spaces


def _slot_names(obj) -> list[str]:
    """The ``__slots__`` of ``obj``'s class and its bases (``__dict__`` and ``__weakref__`` left out)."""
    names = []
    for cls in type(obj).__mro__:
        slots = vars(cls).get("__slots__", ())
        names += [n for n in ([slots] if isinstance(slots, str) else slots) if n not in ("__dict__", "__weakref__")]
    return names


class _Slots(_Names):
    """An object's ``__slots__`` as a mapping, name -> value (unset slots left out)."""

    def __init__(self, obj):
        self.obj, self.names = obj, _slot_names(obj)

    def __getitem__(self, name):
        if name not in self.names:
            raise KeyError(name)
        try:
            return object.__getattribute__(self.obj, name)
        except AttributeError:
            raise KeyError(name) from None

    def __setitem__(self, name, value) -> None:
        object.__setattr__(self.obj, name, value)

    def __delitem__(self, name) -> None:
        object.__delattr__(self.obj, name)


def same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal element by element, NaN equal to NaN."""
    if torch.equal(a, b):
        return True
    return a.is_floating_point() and a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


def check_fns_stateless(out, yb, fns: dict[str, Callable], snaps: dict[str, StateSnapshot]) -> None:
    """Refuse a loss or metric that keeps state between calls (a running average, a call counter, class
    weights taken from the first targets it saw, a value remembered by the targets' identity): each grid
    point's value would then depend on the points evaluated before it. Each ``fns[what]`` is called on the
    batch ``(out, yb)`` as it was before its first call (``snaps[what]``, taken then); if that call set
    state, the batch and ``other_first_call``'s pair are each called first, from that state, then the
    other, whose value must be what it gives as a first call; and after calls on ``other_outputs`` (values
    it must tell apart, e.g. every sample right and every sample wrong for an accuracy), on the batch once more;
    each call from the same random-number state (a loss that samples, e.g. a VAE's ELBO, or that draws a
    fixed projection on its first call, is allowed). Every value on the batch must agree with the first to
    1e-5 (a CUDA loss summing with atomics may differ by rounding), and on other outputs the batch's
    targets tensor must give what a copy of it gives. Outputs of any form (a VAE's (recon, mu, logvar), a
    ``ModelOutput``). Each function is left as before its first call and every generator seeded put back as
    it was. Raises ``LandscapeError`` naming the function, the values and the state it set."""
    others, other = other_outputs(out, yb), other_first_call(out, yb)
    moved = map_outputs(lambda t: t.flip(-1) if t.dim() else t, out)
    # the calls below are the check's own (one class repeated, outputs flipped): their warnings are noise
    with torch.no_grad(), seeding(out) as seed, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for what, fn in fns.items():
            snap = snaps.get(what) or StateSnapshot(None)
            try:
                snap.restore()
                seed()
                first = float(fn(out, yb))
                kept_state = bool(snap.changed())
                seed()
                same = float(fn(moved, yb))  # the batch's targets tensor, as at every grid point
                seed()
                copied = float(fn(moved, tree_map(torch.clone, yb)))
            except Exception:  # noqa: BLE001 - validated apart (a metric of another form, say)
                snap.restore()
                continue
            # (what ran before, value on a batch after it, its value as the first call, state it changed);
            # few restores: a lazily loaded helper (a teacher model) loads again after each
            trials = []
            try:
                if kept_state and other is not None:  # each of the two pairs first, then the other one
                    try:
                        seed()
                        after_batch = float(fn(*other))
                        changed = snap.changed()
                        snap.restore()
                        seed()
                        alone = float(fn(*other))
                        seed()
                        trials += [("a first call on other outputs", float(fn(out, yb)), first, snap.changed()),
                                   ("a first call on other outputs", after_batch, alone, changed)]
                    except Exception:  # noqa: BLE001, S110 - e.g. a loss needing two classes
                        pass
                snap.restore()
                seed()
                for o, t in others:
                    try:
                        fn(o, t)
                    except Exception:  # noqa: BLE001, S110 - e.g. a metric of one output form only
                        pass
                changed = snap.changed()
                seed()
                trials.append(("calls on other outputs", float(fn(out, yb)), first, changed))
            finally:
                snap.restore()
            for how, again, alone, changed in trials:
                if _close(alone, again):
                    continue
                kept = f" (it changed its {', '.join(changed[:4])} when it ran)" if changed else ""
                raise LandscapeError(
                    f"{what} returned {alone:.6g} on a batch, then {again:.6g} on the same outputs and targets "
                    f"after {how}{kept}: it keeps state between calls (e.g. a running average, a counter, or "
                    "something taken from the first outputs or targets it saw, such as class weights) or draws "
                    "from a random generator of its own, so each grid point's value would depend on the points "
                    "evaluated before it; expected a function of (outputs, targets) alone (compute class "
                    "weights from the whole data beforehand and pass them in; a loss that samples may draw "
                    "from torch's, NumPy's or Python's global generator)")
            if not _close(same, copied):
                raise LandscapeError(
                    f"{what} returned {same:.6g} on other outputs with the batch's targets tensor but {copied:.6g} "
                    "with a copy of it: it remembers values by the targets' identity (a cache keyed on id(t) or "
                    "t.data_ptr()), so every grid point (same targets tensor) would get the first one's value; "
                    "expected a function of (outputs, targets) alone")


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))


def random_outputs_note(model: nn.Module, xb, effect: str = "each grid point is another random draw (in an "
                        "eigen-map, each Hessian-vector product) and the surface holds that noise") -> str | None:
    """What to say when two calls of ``model`` on the same samples ``xb``, from the random state as it is,
    differ beyond 1e-5 (`same_tree_outputs`): it samples (dropout with ``training=True`` in ``forward``, MC
    dropout, a Bayesian layer, noise), so each grid point is another draw (each Hessian-vector product of an
    eigen-map, trial s53) and the surface holds sampling noise (a trial saw 0.5 between two runs of one plane).
    None when they agree or the model fails."""
    try:
        first, second = call_model(model, xb), call_model(model, xb)
    except Exception:  # noqa: BLE001 - refused or reported where the model is run for real
        return None
    if same_tree_outputs(first, second):
        return None
    return (f"the model ({type(model).__name__}) gave other outputs in two calls on the same {batch_len(xb)} "
            "samples: it samples at random (e.g. dropout with training=True in forward, MC dropout, a Bayesian "
            f"layer), so {effect}; seed the sampling inside forward, or make forward deterministic at evaluation, "
            "for a loss of the weights alone")


def random_values_note(out, yb, fns: dict[str, Callable]) -> str | None:
    """What to say when a loss or metric (``fns``: name -> function) gives two values on the same outputs and
    targets, called twice from the random state as it is, that differ beyond 1e-5 relative: it samples (a
    VAE's reparametrization noise drawn in the loss), so each grid point is another draw. A trial's (s39)
    two runs of one plane differed by 13 % of the loss, with no warning (the model's own sampling had one).
    None when they agree or a call fails (refused where the functions run for real)."""
    drawn = []
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, fn in fns.items():
            try:
                first, second = float(fn(out, yb)), float(fn(out, yb))
            except Exception:  # noqa: BLE001, S112 - refused or reported where the function is run for real
                continue
            if not (first == second or abs(first - second) <= 1e-5 * max(abs(first), abs(second))
                    or (math.isnan(first) and math.isnan(second))):
                drawn.append(f"{name} ({first:.6g}, then {second:.6g})")
    if not drawn:
        return None
    return (f"{' and '.join(drawn)} gave other values in two calls on the same outputs and targets: it samples "
            "at random (e.g. a VAE's reparametrization noise drawn in the loss), so each grid point is another "
            "random draw and the surface holds that noise; draw the noise from a torch.Generator seeded inside "
            "the function (or average enough draws), for a loss of the weights alone")


def _unmoved(want, moved) -> bool:
    """Whether outputs at weights 1 % apart are the same: bit for bit where ``want`` is finite, with at least one
    such entry, and not finite at the same places. An inf stays inf there whatever the weights do (trial s55: a
    model inf at itself was told its outputs ignore its weights); a masked -inf beside finite entries is judged
    by those."""
    la, lb = tree_leaves(_as_tree(want)), tree_leaves(_as_tree(moved))
    pairs = [(x, y) for (_, x), (_, y) in zip(la, lb) if x.is_floating_point()]
    if len(la) != len(lb) or not pairs or any(x.shape != y.shape for x, y in pairs):
        return False
    finite = [torch.isfinite(x) for x, _ in pairs]
    return (any(bool(f.any()) for f in finite)
            and all(torch.equal(x[f], y[f]) and not bool(torch.isfinite(y[~f]).any())
                    for (x, y), f in zip(pairs, finite)))


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
    first call's) gives which GPUs to seed. What ``snap`` sees is ``StateSnapshot``'s (for a model: its
    modules' attributes and buffers, a helper object's own fields, the module-level names its classes'
    ``forward`` reads); not seen: state deeper than that, in a tensor over 2**20 elements changed in
    place, or a counter that acts after many calls."""
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
    if _unmoved(want, moved):
        raise LandscapeError(
            f"the model ({type(model).__name__}) gave the very same outputs on {n} samples after all its "
            "weights moved by about 1 %: its outputs do not depend on its weights (a forward that ignores them, "
            "e.g. returns a constant or its input, or detaches them; or one locally constant in them, e.g. "
            "sign, round or argmax of a layer's output, with no slope to show) or it returns outputs it remembers (a "
            "cache keyed on the input, id(x) or x.data_ptr()), so every grid point would show the first one's "
            "values; expected a forward computed from its weights at each call")
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


# ------------------------------------------------------- user-code errors ----

def _code_of(fn):
    """The code object a callable runs (a function, a partial's function, a module's forward, ``__call__``)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    code = getattr(fn, "__code__", None)
    if code is None:
        method = getattr(type(fn), "forward" if isinstance(fn, nn.Module) else "__call__", None)
        code = getattr(method, "__code__", None)
    return code


def _user_functions(model: nn.Module, loss_fn, metrics) -> list[tuple]:
    """``(code, label)`` of the user's functions a point runs, each with how a message names it."""
    found: dict = {}
    for m in model.modules():
        code = _code_of(getattr(type(m), "forward", None))
        if code is not None and code not in found:
            found[code] = f"the model ({type(model).__name__}; in {type(m).__name__}.forward)"
    loss = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
    code = _code_of(loss)
    if code is not None:
        found[code] = f"loss_fn {getattr(loss, '__qualname__', type(loss).__name__)!r}"
    named = metrics.items() if isinstance(metrics, dict) else (
        [(getattr(f, "__name__", repr(f)), f) for f in metrics] if isinstance(metrics, (list, tuple)) else [])
    for name, fn in named:
        code = _code_of(fn) if callable(fn) else None
        if code is not None:
            found[code] = f"metric {name!r}"
    return list(found.items())


def _frame_label(tb, functions: list[tuple]) -> str | None:
    """The label of the user's function running in traceback entry ``tb``. Frames from a Dask worker come
    rebuilt (tblib) with code objects that start at the raising line, and code cloudpickle sent by value
    (a notebook's classes) is named ``<dynamic-code>``: such a frame matches the function of that name whose
    lines hold the raising line, in the same file where the file is known; None where none or several do."""
    code = tb.tb_frame.f_code
    for fn, label in functions:
        if (fn.co_filename, fn.co_firstlineno, fn.co_name) == (code.co_filename, code.co_firstlineno, code.co_name):
            return label
    labels = {label for fn, label in functions if fn.co_name == code.co_name
              and code.co_filename in (fn.co_filename, "<dynamic-code>")
              and tb.tb_lineno in {line for _, _, line in fn.co_lines() if line is not None}}
    return labels.pop() if len(labels) == 1 else None


def culprit(exc: BaseException, model: nn.Module, loss_fn, metrics=None) -> str | None:
    """Which of the user's functions (the model's forwards, ``loss_fn``, ``metrics``) raised ``exc``, as a
    message names it, or None where none of them is in its traceback; ``exc``'s traceback is cut to start
    at that function's frame (the outermost one that matches), so a chained report shows the user's own
    frames, not ours."""
    functions = _user_functions(model, loss_fn, metrics)
    tb = exc.__traceback__
    while tb is not None:
        label = _frame_label(tb, functions)
        if label is not None:
            exc.with_traceback(tb)
            return label
        tb = tb.tb_next
    return None


def user_error(exc: BaseException, model: nn.Module, loss_fn, metrics, where: str, kept: str) -> LandscapeError:
    """One clear line for ``exc``, raised by the user's model, loss or a metric: which function raised it
    (``culprit``), its type and message (cut at a word after 600 characters), ``where`` it happened and what
    is ``kept``; meant to be raised ``from exc``."""
    label = culprit(exc, model, loss_fn, metrics) or "the model, loss_fn or a metric"
    text = one_line(exc, whole="all of it is in __cause__")
    return LandscapeError(f"{label} raised {type(exc).__name__}: {text}{user_frame(exc)} ({where}); the original "
                          f"exception is chained as __cause__; {kept}")


@contextlib.contextmanager
def naming_user_errors(model: nn.Module, loss_fn, where: Callable[[], str], kept: str):
    """Re-raise an exception the user's model or ``loss_fn`` raises inside the block as ``user_error``'s one
    line, chained to it (``where()`` says where, at the time it is raised); a ``LandscapeError`` and
    exceptions raised elsewhere than in the user's code (a cancellation) pass unchanged."""
    try:
        yield
    except LandscapeError:
        raise
    except Exception as exc:
        if culprit(exc, model, loss_fn) is None:
            raise
        raise user_error(exc, model, loss_fn, None, where(), kept) from exc
