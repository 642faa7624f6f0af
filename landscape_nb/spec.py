"""What identifies a surface: fingerprints of model, data, directions and loss, and the spec.

A store resumes only a surface whose spec key matches, so the JSON ``SurfaceSpec.to_json``
returns, and hence every key, must stay byte-for-byte what earlier versions wrote
(``tests/test_spec.py`` holds keys from before the redesign).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import types
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

SPEC_VERSION = 1
logger = logging.getLogger(__name__)


def hash_tensor(h, t: torch.Tensor, name: str = "") -> None:
    """Feed a tensor's name, dtype, shape and exact bytes into hashlib object ``h``."""
    t = t.detach().cpu().contiguous().reshape(-1)
    h.update(f"{name}{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy())  # the buffer itself: no copy of large data


def hash_array(h, a) -> None:
    """Feed a NumPy array's dtype, shape and exact bytes into hashlib object ``h``."""
    import numpy as np

    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype}{a.shape}".encode())
    h.update(a.view(np.uint8).reshape(-1))


def data_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """24 hex digits of SHA-256 over the inputs' and targets' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    hash_tensor(h, x)
    hash_tensor(h, y)
    return h.hexdigest()[:24]


def tree_fingerprint(structure: str, leaves) -> str:
    """24 hex digits of SHA-256 over a pytree's structure (e.g. ``"{'input_ids': T, 'labels': T}"``)
    and each ``(path, tensor)`` leaf's path, dtype, shape and bytes.

    Plain ``(inputs, targets)`` tensors keep ``data_fingerprint(x, y)``, so surfaces stored before
    pytree data keep their keys; every other form of data is hashed here."""
    h = hashlib.sha256(f"pytree:{structure}".encode())
    for path, t in leaves:
        hash_tensor(h, t, path)
    return h.hexdigest()[:24]


def _unwrapped(model: nn.Module) -> nn.Module:
    """The model inside ``torch.compile``, ``DataParallel`` or DDP wrappers: the rule of params.unwrap_model (a
    sibling module, not imported)."""
    while True:
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def model_fingerprint(model: nn.Module) -> str:
    """24 hex digits of SHA-256 over the model's class name and its whole ``state_dict``
    (of the model inside a ``torch.compile``, ``DataParallel`` or DDP wrapper)."""
    model = _unwrapped(model)
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, t in model.state_dict().items():
        hash_tensor(h, t, name)
    return h.hexdigest()[:24]


def parameters_fingerprint(model: nn.Module) -> str:
    """24 hex digits of SHA-256 over the values of the model's parameters, in order (of the model inside a
    wrapper): which weights directions were made around, whatever the wrapper (``torch.jit.script`` renames the
    class that `model_fingerprint` hashes) or the buffers."""
    h = hashlib.sha256()
    for p in _unwrapped(model).parameters():
        hash_tensor(h, p)
    return h.hexdigest()[:24]


def tensors_sketch(tensors) -> list[list[float]] | None:
    """Per tensor (in order): its norm, its sum and its alternating sum (Σ w[0::2] − Σ w[1::2]) over the
    flattened values, in float64. Another dtype's copy of the same values keeps each to float rounding (relative
    to the norm); other values of the same shapes move the sums by about their norm. None where a tensor has no
    values (meta). What `made_around` and `made_around_buffers` compare (`sketches_match`)."""
    out = []
    with torch.no_grad():
        for t in tensors:
            if t.device.type == "meta":
                return None
            v = t.detach().reshape(-1)
            if not v.is_floating_point():  # a frozen integer or bool Parameter (a lookup table): torch's norm
                v = v.double()             # raised a bare RuntimeError (trial s56)
            out.append([float(torch.linalg.vector_norm(v, dtype=torch.float64)), float(v.sum(dtype=torch.float64)),
                        float(v[0::2].sum(dtype=torch.float64) - v[1::2].sum(dtype=torch.float64))])
    return out


def sketches_match(then: list, now: list, rtol: float) -> bool:
    """Whether two `tensors_sketch` results agree: as many tensors, each figure within ``rtol`` of the tensor's
    norm."""
    return len(now) == len(then) and all(abs(a - b) <= rtol * max(x[0], y[0]) + 1e-30
                                         for x, y in zip(then, now) for a, b in zip(x, y))


def weights_sketch(model: nn.Module) -> list[list[float]] | None:
    """`tensors_sketch` of the model's parameters (in order, of the model inside a wrapper). What `made_around`
    compares: `parameters_fingerprint` is exact, so directions made around a model warned on its float64 copy
    (re-trial s38). None where a parameter has no values (meta)."""
    return tensors_sketch(_unwrapped(model).parameters())


def centre_of(model: nn.Module) -> dict:
    """What directions (a path's, a PCA's, Hessian eigenvectors) record of the weights they were made around:
    ``centre_weights`` (`parameters_fingerprint`) and ``centre_sketch`` (`weights_sketch`), read by `made_around`."""
    return {"centre_weights": parameters_fingerprint(model), "centre_sketch": weights_sketch(model)}


def made_around_buffers(provenance: Mapping, buffers, rtol: float = 1e-4) -> bool | None:
    """Whether ``buffers`` (a model's floating-point state buffers, ``params.float_state_buffers``' tensors) are
    those a path spanning buffers was made around (its ``centre_buffers``, `tensors_sketch` of them, within
    ``rtol`` of each buffer's norm: a float64 copy keeps them to rounding); None where it recorded none. A's
    weights with B's BatchNorm statistics passed as the centre of the plane through A, B and C put none of the
    three where the axes said, with no word (re-trial s49)."""
    then = provenance.get("centre_buffers")
    now = None if then is None else tensors_sketch(buffers)
    return None if now is None else sketches_match(then, now, rtol)


def made_around(provenance: Mapping, model: nn.Module, rtol: float = 1e-2) -> bool | None:
    """Whether ``model``'s parameters are the ones directions (or a path) were made around: their
    ``centre_sketch`` (`weights_sketch`) within ``rtol`` of each parameter's norm, or, for directions made
    before it was recorded, their exact ``centre_weights`` (`parameters_fingerprint`); None where neither was
    recorded."""
    sketch = provenance.get("centre_sketch")
    if sketch is not None:
        now = weights_sketch(model)
        return None if now is None else sketches_match(sketch, now, rtol)
    made = provenance.get("centre_weights")
    return None if not made else made == parameters_fingerprint(model)


def code_fingerprint(model: nn.Module) -> dict:
    """The source code of the model's own module classes (torch's are left out), hashed:
    ``{"fingerprint": 16 hex digits, "structure": 16 hex digits of the sources' `source_structure` (the same
    after an edit of comments or blank lines only, and compared instead where both surfaces have
    it), "classes": [qualified names], "modules": module_settings(model), "settings": per module, what its
    hash covers, readable}``.
    A class whose source cannot be read (defined in a notebook cell or ``python -c``) counts by name only.

    Not part of the spec key (keys written before it stay valid); a store compares it on resume
    (``store.SurfaceStore``), so editing ``forward`` between two runs is refused, not mixed in."""
    classes = {f"{c.__module__}.{c.__qualname__}": c for c in map(type, model.modules())
               if not c.__module__.startswith("torch.")}
    h, shape = hashlib.sha256(), hashlib.sha256()
    for name in sorted(classes):
        source = _class_source(classes[name])
        h.update(f"{name}\n{source}".encode())
        shape.update(f"{name}\n{source_structure(source)}".encode())
    settings = _module_settings(model)
    return {"fingerprint": h.hexdigest()[:16], "structure": shape.hexdigest()[:16], "classes": sorted(classes),
            "modules": {name: hashed for name, (hashed, _) in settings.items()},
            "settings": {name: texts for name, (_, texts) in settings.items()}}


_PLAIN = (bool, int, float, str, type(None))
#: how many calls deep `globals_fingerprint` follows the user's own functions (an edit three calls below forward
#: kept the store at 2, trial s34; nine below it, a Dask worker's old code, at 8, trial s35); what is walked is
#: the user's code only, each function once
CALL_DEPTH = 32


def module_settings(model: nn.Module) -> dict[str, str]:
    """Per submodule (by name; ``""`` the model itself), 12 hex digits of SHA-256 over what makes it compute
    what it does besides its ``state_dict``: its class, its ``extra_repr()`` (torch's modules' settings:
    ``eps``, ``negative_slope``, ``stride``...), its non-persistent buffers and its own plain attributes
    (numbers, strings, tuples of them, tensors; containers of those: dicts, lists, SimpleNamespaces, dataclasses
    and objects of the user's own classes, `_config_text`). A model made of torch's modules only has no source of its
    own to compare (``code_fingerprint``'s classes), so ReLU swapped for Tanh, another BatchNorm ``eps`` or a
    temperature attribute changed kept the weights, the key and the store: a resumed surface mixed two
    models' values. Not seen here: module-level globals (``globals_fingerprint``) and attributes of other
    types (modules, functions, objects of installed packages)."""
    return {name: hashes for name, (hashes, _) in _module_settings(model).items()}


SETTING_TEXT = 160  # characters of a module setting kept to show how it changed


def _module_settings(model: nn.Module) -> dict[str, tuple[str, dict[str, str]]]:
    """Per submodule, `module_settings`' hash and what it hashes, readable, so that a refused resume can say
    what changed and how (``t: then 1.0, now 2.0``; it named the module only, trial s34): ``{"class": its class,
    "settings": its extra_repr(), attribute or buffer name: its value}``, each cut to ``SETTING_TEXT``
    characters; a tensor as its values where it has at most 8, else its shape, dtype and a hash. The plain
    attributes of torch's own modules are left out (their ``extra_repr`` says them)."""
    def cut(text: str) -> str:
        return text if len(text) <= SETTING_TEXT else text[: SETTING_TEXT - 3] + "..."

    def tensor_text(t: torch.Tensor) -> str:
        if t.numel() <= 8:
            return cut(" ".join(repr(t.detach().cpu()).split()))
        h = hashlib.sha256()
        hash_tensor(h, t)
        return f"a {t.dtype} tensor of shape {tuple(t.shape)} (sha256 {h.hexdigest()[:8]})"

    out = {}
    for name, m in model.named_modules(remove_duplicate=False):
        h = hashlib.sha256(f"{type(m).__module__}.{type(m).__qualname__}\n".encode())
        texts = {"class": f"{type(m).__module__}.{type(m).__qualname__}"}
        with contextlib.suppress(Exception):  # a user's extra_repr that fails: the class and attributes remain
            settings = m.extra_repr()
            h.update(settings.encode())
            if settings:
                texts["settings"] = cut(settings)
        for key in sorted(getattr(m, "_non_persistent_buffers_set", ())):
            t = m._buffers.get(key)
            if isinstance(t, torch.Tensor):
                hash_tensor(h, t, key)
                texts[key] = tensor_text(t)
        own = not type(m).__module__.startswith("torch.")
        for key, value in sorted(vars(m).items()):
            if key.startswith("_") or key == "training":
                continue
            text = None
            if isinstance(value, torch.Tensor):
                hash_tensor(h, value.detach(), key)
                text = tensor_text(value)
            elif _plain(value):
                h.update(f"{key}={value!r}\n".encode())
                text = repr(value)
            else:  # a config in a dict, list, SimpleNamespace or dataclass (trial s34: a changed cfg["temp"] kept
                text = _config_text(value)  # the store, which returned the old surface)
                if text is not None:
                    h.update(f"{key}={text}\n".encode())
            if own and text is not None:
                texts[key] = cut(text)
        out[name] = (h.hexdigest()[:12], texts)
    return out


CONFIG_LEAVES = 10_000  # a container attribute with more values than this is not compared (a cache, not a setting)


def _config_text(value) -> str | None:
    """A canonical text of a container of settings: dicts (by sorted key), lists, tuples, sets (sorted),
    SimpleNamespaces, dataclass instances and the user's own objects (their fields, ``__slots__`` too), nested,
    of numbers (NumPy's too), strings, None, dtypes, devices, paths and enum members. What it cannot compare
    stands as a placeholder, the rest still compared (a dict holding a dtype beside ``temp`` hid a changed
    temp, trial s34): a module (a back reference), a function (its code is `globals_fingerprint`'s), another
    object, and tensors and arrays, whose values are data a forward may cache (a rotary cache keyed by length
    was refused after a call on another length): a container of tensors only is left out. None past
    ``CONFIG_LEAVES`` values: not compared."""
    import dataclasses
    import enum
    import types

    import numpy as np

    budget = [CONFIG_LEAVES]

    def data(v) -> bool:
        return isinstance(v, (torch.Tensor, np.ndarray)) or (
            isinstance(v, (list, tuple)) and bool(v) and all(data(e) for e in v))

    def text(v, depth: int) -> str:
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError
        if depth > 8:
            return "<deep>"
        if isinstance(v, _PLAIN):
            return repr(v)
        if isinstance(v, np.generic):
            return f"{type(v).__name__}({v.item()!r})"
        if isinstance(v, (torch.dtype, torch.device)):
            return repr(v)
        if isinstance(v, enum.Enum):
            return f"{type(v).__qualname__}.{v.name}"
        if isinstance(v, os.PathLike):
            return f"path:{os.fspath(v)}"
        if isinstance(v, (torch.Tensor, np.ndarray)):
            return "<data>"
        if isinstance(v, nn.Module):
            return "<module>"
        if isinstance(v, (types.FunctionType, types.BuiltinFunctionType, types.MethodType, functools.partial)):
            return f"<function {getattr(v, '__qualname__', type(v).__name__)}>"
        if isinstance(v, (list, tuple)):
            return f"{type(v).__name__}[" + ",".join(text(e, depth + 1) for e in v) + "]"
        if isinstance(v, (set, frozenset)):
            return "set{" + ",".join(sorted(text(e, depth + 1) for e in v)) + "}"
        if isinstance(v, types.SimpleNamespace):
            v = vars(v)
        elif isinstance(v, type):
            return f"<class {v.__qualname__}>"
        elif dataclasses.is_dataclass(v):
            v = {f.name: getattr(v, f.name) for f in dataclasses.fields(v)}
        elif users_module(type(v).__module__) and not isinstance(v, dict):
            fields = dict(getattr(v, "__dict__", None) or {})
            for cls in type(v).__mro__:  # __slots__ helpers have no __dict__
                for name in ([cls.__slots__] if isinstance(getattr(cls, "__slots__", ()), str)
                             else getattr(cls, "__slots__", ())):
                    if hasattr(v, name) and name not in ("__dict__", "__weakref__"):
                        fields[name] = getattr(v, name)
            v = {"__class__": type(v).__qualname__, **fields}  # a helper object of the user's: its fields
        if isinstance(v, dict):
            if v and all(data(e) for e in v.values()):  # a cache (by shape, by length): not a setting
                return "<data>"
            items = sorted(v.items(), key=lambda kv: repr(kv[0]))
            return "{" + ",".join(f"{k!r}:{text(e, depth + 1)}" for k, e in items) + "}"
        return f"<{type(v).__qualname__}>"

    if data(value) or isinstance(value, dict) and value and all(data(e) for e in value.values()):
        return None  # a container of tensors only: data, as before
    try:
        return text(value, 0)
    except Exception:  # noqa: BLE001 - too big, or a field that cannot be read: not compared
        return None


#: what `globals_and_structures` records, numbered: a store of another number compares the entries both hold
#: (2: defaults of the user's functions, arguments of partials, functions sharing one name told apart)
CODE_VERSION = 2


def globals_fingerprint(model: nn.Module, loss_fn=None, metrics=None, *, loaded: bool = False) -> dict[str, str]:
    """What the user's own code reads besides the weights and arguments, hashed per name: 12 hex digits of
    SHA-256 for each module-level global (a number, string, tuple of them, tensor or array) read (a
    global load in the bytecode, or an attribute of a module of the user's) by the forwards of the model's
    own classes (and the methods they call), ``loss_fn`` or the metrics, or by functions of the user's
    they call (``CALL_DEPTH`` calls deep) and methods of the user's helper objects kept as attributes,
    e.g. ``{"lossmod.TEMP": ..., "lossmod.temp_ce()": ...}``; ``name()``
    entries hash such a function's source (or bytecode where unreadable); with ``loaded=True``, its bytecode,
    names, constants and default arguments as this process loaded them (``inspect.getsource`` reads the file
    as it is now, which a Dask worker that imported the module before an edit does not run), not for a
    function whose asserts pytest rewrote (a worker importing it runs the same code, not rewritten), and also
    the forwards of the user's base classes and functions kept as attributes of a module (``self.act = act``).
    A global that code writes (a call counter) is state, not a setting, and is left out.

    "The user's own" is code outside the standard library, installed packages and landscape_nb. Not part of
    the spec key (keys written before it stay valid); a store compares it on resume
    (``store.SurfaceStore``): a loss in an importable module pickles by name, so ``TEMP = 3`` or an edited
    body between two runs kept the key and the store, and a resumed surface mixed two losses' values.
    """
    return globals_and_structures(model, loss_fn, metrics, loaded=loaded)[0]


def globals_and_structures(model: nn.Module, loss_fn=None, metrics=None, *,
                           loaded: bool = False) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """``(globals_fingerprint(...), structures, uncompared)``: ``structures`` holds, for each ``name()`` entry read
    from source (not with ``loaded=True``), 12 hex digits of SHA-256 over its syntax tree
    (`source_structure`), which a comment or a blank line leaves as it is (a comment added to
    forward refused a resume, s36): compared instead of the source's hash where both surfaces recorded it.
    ``uncompared`` names the module-level dicts, lists, sets and SimpleNamespaces read, which are not compared
    (a forward may fill them as it runs): a resume says so."""
    import types

    import numpy as np

    out: dict[str, str] = {}
    structures: dict[str, str] = {}  # globals_and_structures
    uncompared: list[str] = []  # module-level containers read (globals_and_structures)
    seen: dict[int, int] = {}  # id -> the smallest depth it was walked at (reached nearer: walked again)
    seen_objects: set[int] = set()  # tables and helper objects followed (`walk_object`)
    written: set[str] = set()
    keyed: dict[str, list[int]] = {}  # a function's key -> the closures walked under it, in walk order
    own = users_module

    def record(key: str, value) -> None:
        h = hashlib.sha256()
        try:
            if _plain(value):  # not dicts or lists, which a forward may fill as it runs
                h.update(repr(value).encode())
            elif isinstance(value, functools.partial) and all(map(_plain, (*value.args, *value.keywords.values()))):
                h.update(repr((getattr(value.func, "__qualname__", type(value.func).__qualname__), value.args,  # its
                               sorted(value.keywords.items()))).encode())  # arguments: ACT = partial(f, k=2.0) (s38)
            elif isinstance(value, torch.Tensor) and value.layout == torch.strided and value.device.type != "meta":
                hash_tensor(h, value.detach())
            elif isinstance(value, np.ndarray) and value.dtype != object:
                hash_array(h, value)
            else:
                if isinstance(value, (dict, list, set, types.SimpleNamespace)):  # settings or a cache: said, not
                    uncompared.append(key)  # compared (a resume after CFG["slope"] changed mixed two models, s37)
                return
        except Exception:  # noqa: BLE001 - an object that cannot be read (a proxy) is not compared
            return
        out[key] = h.hexdigest()[:12]

    def visit(code: types.CodeType, g: dict, depth: int, methods: dict, defaults: tuple = ()) -> None:
        loads, stores, attrs = _reads(code)
        module = g.get("__name__", "?")
        if attrs & {"environ", "getenv"} or any(g.get(n) is os.environ or g.get(n) is os.getenv for n in loads):
            # os.environ.get("LTEMP", "1") at call time: a worker started with LTEMP=3 mixed two losses (trial
            # s35); the name a constant, a default argument or a module-level string (NAME = "LTEMP")
            named = {*_names_in(code), *(v for v in (*defaults, *(g.get(n) for n in loads)) if _env_name(v))}
            for name in sorted(named):
                record(f"os.environ[{name!r}]", os.environ.get(name))
        written.update(f"{module}.{name}" for name in stores)  # state the code keeps (a call counter), not a setting
        for name in sorted(attrs & methods.keys()):  # self.helper(...): a method of the same object, same depth
            walk(methods[name], depth, methods)
        for name in sorted(loads):  # sorted: the same entries in every process, whatever its hash seed
            if name not in g:
                continue
            value = g[name]
            record(f"{module}.{name}", value)
            if isinstance(value, types.ModuleType) and own(value.__name__):  # lossmod.TEMP read as an attribute
                for attr in sorted(attrs & vars(value).keys()):
                    record(f"{value.__name__}.{attr}", vars(value)[attr])
                    if depth < CALL_DEPTH:
                        walk(vars(value)[attr], depth + 1)
            elif isinstance(value, (dict, list, tuple)) and depth < CALL_DEPTH:  # ACTS["relu"](z): the functions
                walk_object(value, depth + 1)  # a module-level table holds
            elif isinstance(value, type) and own(value.__module__) and depth < CALL_DEPTH:  # Scale.by(o): a class's
                methods = methods_of(value)  # static, class or plain method called through the class
                for attr in sorted(attrs & methods.keys()):
                    walk(methods[attr], depth + 1)
            elif depth < CALL_DEPTH:
                walk(value, depth + 1)

    def methods_of(klass: type) -> dict:
        """The user's own methods of class ``klass``: functions, static and class methods, property getters."""
        out = {}
        for cls in reversed(klass.__mro__):
            if own(cls.__module__):
                for n, raw in vars(cls).items():
                    f = (raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else
                         raw.fget if isinstance(raw, property) else raw)
                    if isinstance(f, types.FunctionType):
                        out[n] = f
        return out

    def walk_object(obj, depth: int) -> None:
        """Functions kept in a table, and the methods of the user's helper objects (trial s34: an edit in
        ``self.post.apply``, ``self.ops["act"]``, a static method, a property, a helper held by a helper or in a
        list kept the store), with their own fields followed the same way."""
        if depth > CALL_DEPTH or id(obj) in seen_objects:
            return
        seen_objects.add(id(obj))
        if isinstance(obj, (types.FunctionType, functools.partial, types.MethodType)):
            walk(obj, depth)
        elif isinstance(obj, dict):
            for key in sorted(obj, key=repr):
                walk_object(obj[key], depth)
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                walk_object(item, depth)
        elif not isinstance(obj, (nn.Module, type)) and own(type(obj).__module__):
            helper = methods_of(type(obj))
            for n in sorted(helper):
                walk(helper[n], depth, helper)
            fields = getattr(obj, "__dict__", None)
            for value in list((fields or {}).values()):
                walk_object(value, depth + 1)

    def walk(fn, depth: int, methods: dict | None = None) -> None:
        while isinstance(fn, functools.partial):
            fn = fn.func
        if isinstance(fn, types.MethodType):  # a bound method (getattr could run an object's own __getattr__)
            fn = fn.__func__
        if seen.get(id(fn), depth + 1) <= depth:
            return
        seen[id(fn)] = depth
        wrapped = None if isinstance(fn, type) else getattr(fn, "__wrapped__", None)
        if callable(wrapped):  # a decorated function (functools.wraps, lru_cache): the code it wraps, whose
            walk(wrapped, depth, methods)  # edits, globals and callees resumed stale points (re-trial s37)
        if isinstance(fn, types.FunctionType):
            home = fn.__globals__.get("__name__", fn.__module__)  # where its code is: wraps() copies the name and
            if own(home):  # __module__ of what it wraps, torch.tanh's for A = deco(tanh)
                key = f"{fn.__module__}.{fn.__qualname__}()" + (
                    "" if not callable(wrapped) else " wrapper" if home == fn.__module__ else
                    f" wrapper ({home}.{getattr(fn.__code__, 'co_qualname', '?')})")
                twins = keyed.setdefault(key, [])  # scale(2)(f1), scale(5)(f2), two lambdas in a table: one
                if id(fn) not in twins:  # qualname, two functions, whose entries overwrote each other (s38)
                    twins.append(id(fn))
                key += f" #{twins.index(id(fn)) + 1}" if twins.index(id(fn)) else ""
                if not loaded:
                    source = _function_source(fn.__code__ if callable(wrapped) else fn)  # getsource(fn) unwraps
                    record(key, source)
                    structures[key] = hashlib.sha256(source_structure(source).encode()).hexdigest()[:12]
                    if fn.__defaults__ or fn.__kwdefaults__:  # def act(z, k=k) made by a factory: its source
                        record(f"{key} defaults", _defaults_text(fn))  # stays, its value changes (re-trial s38)
                elif "@py_builtins" not in fn.__globals__:  # pytest rewrote its asserts here, not on a worker
                    record(key, _code_text(fn.__code__) + _defaults_text(fn))
                writes = _cell_writes(fn.__code__)  # nonlocal calls; calls += 1: state, not a setting (review s38)
                for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):  # a decorator's arguments
                    if not _assigned(cell):
                        continue
                    value = cell.cell_contents
                    if name in writes:  # a counter or a flag (calls += 1, done = True): state; another assignment
                        if not writes[name]:  # (k = int(k) at the first call) holds a setting whose value
                            uncompared.append(f"{key} closure {name}")  # depends on whether the forward ran in
                        continue  # this process (a Dask run's store refused an in-process resume): said, as dicts
                    record(f"{key} closure {name}", value)
                    if depth < CALL_DEPTH and isinstance(value, (dict, list, tuple)):
                        walk_object(value, depth + 1)
                    elif depth < CALL_DEPTH and not _plain(value):
                        walk(value, depth + 1)
                for value in (*(fn.__defaults__ or ()), *(fn.__kwdefaults__ or {}).values()):
                    if isinstance(value, (dict, list, set, types.SimpleNamespace)):  # def h(x, cfg=CFG): said
                        named = [n for n, v in fn.__globals__.items() if v is value]
                        uncompared.append(f"{fn.__globals__.get('__name__', '?')}.{named[0]}" if named else
                                          f"{key} default")
                visit(fn.__code__, fn.__globals__, depth, methods or {},
                      (*(fn.__defaults__ or ()), *(fn.__kwdefaults__ or {}).values()))
        elif callable(fn) and not isinstance(fn, type):  # a callable object: from its forward (or __call__) on
            own_methods = {name: f for cls in reversed(type(fn).__mro__) if own(cls.__module__)
                           for name, f in vars(cls).items() if isinstance(f, types.FunctionType)}
            name = "forward" if isinstance(fn, nn.Module) else "__call__"
            entry = own_methods.get(name)
            if entry is not None:
                walk(entry, depth, own_methods)
            if loaded:  # also what a worker runs through super().forward() and functions kept as attributes
                for cls in type(fn).__mro__[1:]:
                    if own(cls.__module__) and isinstance(vars(cls).get(name), types.FunctionType):
                        walk(vars(cls)[name], depth, own_methods)
                for value in list(getattr(fn, "__dict__", {}).values()):
                    if isinstance(value, types.FunctionType):
                        walk(value, depth, own_methods)
            for value in list(getattr(fn, "__dict__", {}).values()):  # self.post.apply(...), self.ops["act"]
                if not isinstance(value, (nn.Module, type, types.FunctionType)):  # (functions: just above)
                    walk_object(value, depth + 1)

    named = metrics.values() if isinstance(metrics, Mapping) else metrics if isinstance(metrics, (list, tuple)) else ()
    for fn in [*model.modules(), loss_fn, *named]:
        try:
            walk(fn, 0)
        except Exception:  # what cannot be read is not compared; the run itself must not fail here
            logger.debug("globals_fingerprint: could not follow %r", fn, exc_info=True)
    return ({k: v for k, v in sorted(out.items()) if k not in written},
            {k: v for k, v in sorted(structures.items()) if k not in written},
            sorted(k for k in dict.fromkeys(uncompared) if k not in written))


def users_module(module_name: str | None) -> bool:
    """Whether ``module_name`` is the user's own code: not the standard library, an installed package
    (site-packages, dist-packages) or landscape_nb."""
    import sys

    root = (module_name or "").partition(".")[0]
    if not root or root == "landscape_nb" or root in sys.stdlib_module_names or root == "builtins":
        return False
    path = getattr(sys.modules.get(root), "__file__", None) or ""
    return "site-packages" not in path and "dist-packages" not in path


@functools.lru_cache(maxsize=512)  # parsed at every compute_surface: the same sources each time
def source_structure(source: str) -> str:
    """``source`` as its syntax tree (``ast.dump``, no line numbers): the same for two sources that differ only in
    comments, blank lines or line breaks inside brackets; ``source`` itself where it does not parse alone (a lambda
    cut out of its line) or is empty. Docstrings stay: code may read them (``__doc__``: a factor in a helper's
    docstring resumed a store after it changed, re-trial s37)."""
    import ast
    import textwrap

    try:
        return ast.dump(ast.parse(textwrap.dedent(source)))
    except (SyntaxError, ValueError):
        return source


def _plain(value) -> bool:
    return isinstance(value, _PLAIN) or (isinstance(value, tuple) and all(isinstance(v, _PLAIN) for v in value))


def _function_source(fn) -> str:
    """A function's (or code object's) source, or (where it cannot be read: stdin, ``exec``) its bytecode, names
    and constants, nested code included, with nothing that changes between processes (a code object's repr holds
    its address, a frozenset's order follows the string hash seed)."""
    import inspect

    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return _code_text(getattr(fn, "__code__", fn))


def _defaults_text(fn) -> str:
    """A function's default arguments (not in its code object): plain values as written, others by type."""
    values = [*(fn.__defaults__ or ()), *sorted((fn.__kwdefaults__ or {}).items())]
    return "|defaults:" + repr([v if _plain(v) else type(v).__qualname__ for v in values])


def _code_text(code) -> str:
    import types

    def const(c) -> str:
        if isinstance(c, types.CodeType):
            return _code_text(c)
        return repr(sorted(map(repr, c))) if isinstance(c, frozenset) else repr(c)

    return "|".join([code.co_code.hex(), repr(code.co_names), *map(const, code.co_consts)])


def _env_name(value) -> bool:
    """Whether ``value`` could name an environment variable: a short identifier-like string."""
    import re

    return isinstance(value, str) and len(value) <= 64 and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value) is not None


def _names_in(code) -> list[str]:
    """The string constants of ``code`` and the code nested in it that could name an environment variable."""
    import types

    out = set()
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            out.update(_names_in(c))
        elif _env_name(c):
            out.add(c)
    return sorted(out)


def _reads(code) -> tuple[set[str], set[str], set[str]]:
    """(globals read, globals written, attribute names read) by ``code`` and the code nested in it, from
    its bytecode: ``co_names`` mixes globals with attribute names (``self.scale`` is not global ``scale``)."""
    import dis
    import types

    loads: set[str] = set()
    stores: set[str] = set()
    attrs: set[str] = set()
    for ins in dis.get_instructions(code):
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
            loads.add(ins.argval)
        elif ins.opname in ("STORE_GLOBAL", "DELETE_GLOBAL"):
            stores.add(ins.argval)
        elif ins.opname in ("LOAD_ATTR", "LOAD_METHOD"):
            attrs.add(ins.argval)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            inner = _reads(c)
            loads |= inner[0]
            stores |= inner[1]
            attrs |= inner[2]
    return loads, stores, attrs


def _cell_writes(code) -> dict[str, bool]:
    """The free variables ``code`` (or code nested in it, through its own free variables) assigns or deletes, each
    with whether every such assignment is from arithmetic or a constant (``calls += 1``, ``done = True``: a counter
    or a flag, which a forward changes as it runs) rather than, say, ``k = int(k)`` (a setting)."""
    import dis
    import types

    writes: dict[str, bool] = {}
    previous = None
    for ins in dis.get_instructions(code):
        if ins.opname in ("STORE_DEREF", "DELETE_DEREF") and ins.argval in code.co_freevars:
            arithmetic = previous is not None and (previous.opname.startswith(("BINARY_", "INPLACE_", "UNARY_"))
                                                  or previous.opname in ("LOAD_CONST", "RETURN_CONST"))
            writes[ins.argval] = writes.get(ins.argval, True) and arithmetic
        if ins.opname not in ("CACHE", "EXTENDED_ARG", "NOP"):
            previous = ins
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            for name, counter in _cell_writes(c).items():
                if name in code.co_freevars:
                    writes[name] = writes.get(name, True) and counter
    return writes


def _class_source(cls: type) -> str:
    """``inspect.getsource(cls)``, "" where unreadable; kept while the class's file keeps its size
    and modification time (inspect parses the whole file each time: ~2.5 ms of a 50 ms mlp-digits
    21x21 surface)."""
    import inspect

    try:
        path = inspect.getsourcefile(cls)
        st = os.stat(path) if path else None
    except (OSError, TypeError):
        st = None
    return _source_of(cls, None if st is None else (st.st_mtime_ns, st.st_size))


@functools.lru_cache(maxsize=256)
def _source_of(cls: type, stamp: tuple | None) -> str:
    import inspect

    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):
        return ""


def _callable_fingerprint(fn) -> str | None:
    """A loss function's identity: its cloudpickle bytes hashed (what it closes over and the globals of a
    notebook's function included, by value), or its name when unpicklable. Tensors and arrays are written
    as the SHA-256 of their dtype, shape and bytes: torch pickles a tensor's storage under a key of its
    own, so two equal ``nn.CrossEntropyLoss(weight=w)`` got two fingerprints (a store could not be resumed
    from another process), and a loss reading a 188 MB global tensor cost 1.35 s and 367 MB to pickle."""
    if fn is None:
        return None
    try:
        import io

        buffer = io.BytesIO()
        with _counters_masked(fn):
            _digesting_pickler()(buffer).dump(fn)
        return hashlib.sha256(buffer.getvalue()).hexdigest()[:16]
    except Exception:  # unpicklable callables are identified by name only (as metrics.loss_name names them;
        name = getattr(fn, "__qualname__", None) or type(fn).__qualname__  # not imported: a sibling module)
        return f"{getattr(fn, '__module__', '') or type(fn).__module__}.{name}"


@contextlib.contextmanager
def _counters_masked(fn):
    """While inside, the closure cells that ``fn`` (or a function it closes over) writes (a ``nonlocal`` call counter,
    a first-call flag, a setting converted at the first call) read None: a loss wrapped by a counting decorator got
    another fingerprint after each call, and a rerun refused its own store (re-trial s38). `globals_and_structures`
    names the ones that are not counters, which a resume says it does not compare."""
    import types

    masked = []
    for f in (fn, *(c.cell_contents for c in getattr(fn, "__closure__", None) or () if _assigned(c))):
        if not isinstance(f, types.FunctionType) or not f.__closure__:
            continue
        writes = _cell_writes(f.__code__)
        for name, cell in zip(f.__code__.co_freevars, f.__closure__):
            if name in writes and _assigned(cell):
                masked.append((cell, cell.cell_contents))
                cell.cell_contents = None
    try:
        yield
    finally:
        for cell, value in reversed(masked):  # a cell met twice: its own value last
            cell.cell_contents = value


def _assigned(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - raises ValueError for a cell not yet assigned
    except ValueError:
        return False
    return True


def _digest(hexdigest: str) -> str:
    """What a tensor or array pickles to in a fingerprint (``_digesting_pickler``)."""
    return hexdigest


@functools.lru_cache(maxsize=1)
def _digesting_pickler() -> type:
    """cloudpickle's pickler writing tensors and arrays as their SHA-256, and sets in a fixed order (made once:
    it imports cloudpickle). A set of strings is iterated in the order of the process's hash seed, so a loss
    holding one got another fingerprint in every process and its store never resumed (trial s34). The C
    pickler asks no reducer for sets, so this is cloudpickle's reductions on the pure-Python pickler, whose
    bytes are the C one's otherwise (the fingerprints of earlier stores held). A function pickled by value (of
    a script or notebook) is written without its code's file name and line numbers and its module's
    ``__file__`` (`_code_without_place`): where it is written is not what it computes (since 2026-12-07: a
    store of such a loss written before is refused once)."""
    import pickle

    import cloudpickle
    import numpy as np

    cloud = cloudpickle.CloudPickler

    class DigestingPickler(pickle._Pickler):
        dispatch_table = cloud.dispatch_table
        _dynamic_function_reduce = cloud._dynamic_function_reduce
        _function_reduce = cloud._function_reduce

        def _function_getnewargs(self, func):
            # the script's or notebook cell's file a function's module globals name (``__file__``) is where it was
            # run from, not what it computes (trial s54: a script run from another folder got another key)
            code, base, *rest = cloud._function_getnewargs(self, func)
            return (code, {k: v for k, v in base.items() if k != "__file__"}, *rest)

        def __init__(self, file):
            super().__init__(file, protocol=cloudpickle.DEFAULT_PROTOCOL)
            self.globals_ref = {}  # cloudpickle's: functions sharing globals share them

        def save_set(self, obj):
            pickle._Pickler.save_set(self, sorted(obj, key=repr))

        def save_frozenset(self, obj):
            pickle._Pickler.save_frozenset(self, sorted(obj, key=repr))

        dispatch = {**pickle._Pickler.dispatch, set: save_set, frozenset: save_frozenset}  # noqa: RUF012 - read only

        def reducer_override(self, obj):
            if isinstance(obj, types.CodeType) and (obj.co_filename or obj.co_firstlineno != 1):
                # where a function of a script or notebook is written is not what it computes: a line added
                # above a script's loss, a script run from another folder, or a notebook's kernel restarted
                # (its cells' files are /tmp/ipykernel_<pid>/...) gave its store another key (trial s54)
                return cloud.dispatch_table[types.CodeType](_code_without_place(obj))
            if isinstance(obj, type):
                return _placeless_class(cloud.reducer_override(self, obj), obj)
            if isinstance(obj, torch.Tensor) and obj.device.type != "meta" and obj.layout == torch.strided:
                h = hashlib.sha256(b"tensor")
                hash_tensor(h, obj)
                return _digest, (h.hexdigest(),)
            if isinstance(obj, np.ndarray) and obj.dtype != object:
                h = hashlib.sha256(b"array")
                hash_array(h, obj)
                return _digest, (h.hexdigest(),)
            return cloud.reducer_override(self, obj)

    return DigestingPickler


def _placeless_class(reduced, cls):
    """cloudpickle's reduction of a class of a script or notebook (pickled by value) without what differs between
    processes or places: its tracker id, a random uuid (review s54: a loss ``class Focal(nn.Module)`` of a script
    got another fingerprint in every process, so its store never resumed), now the class's qualified name, and
    ``__firstlineno__`` (Python 3.13). A class pickled by reference, or a reduction of another shape, is left
    as it is."""
    import cloudpickle.cloudpickle as cp

    if not isinstance(reduced, tuple) or len(reduced) < 3:
        return reduced
    at = {getattr(cp, "_make_skeleton_class", None): 4, getattr(cp, "_make_skeleton_enum", None): 5}.get(reduced[0])
    args, state = reduced[1], reduced[2]
    if at is None or not isinstance(args, tuple) or len(args) <= at:
        return reduced
    args = (*args[:at], f"{cls.__module__}.{cls.__qualname__}", *args[at + 1:])
    if isinstance(state, tuple) and state and isinstance(state[0], dict):
        state = ({k: v for k, v in state[0].items() if k != "__firstlineno__"}, *state[1:])
    return (reduced[0], args, state, *reduced[3:])


def _code_without_place(code):
    """``code`` with no file name and its lines renumbered from 1, as if written at the top of a file of no name:
    the same bytecode, constants, names and exception table (what it computes), nested code objects left to the
    pickler (each goes through ``reducer_override``)."""
    return code.replace(co_filename="", co_firstlineno=1, co_linetable=b"")


def spec_key(spec: Mapping) -> str:
    """24 hex digits of SHA-256 over the spec's JSON with sorted keys."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class SurfaceSpec:
    """Everything that decides a surface's values; a store resumes only the same spec.

    Speed-only choices (``points_per_pass``, ``fold_bn``, the runner, the device) change
    values at most by float rounding and are provenance, not spec.

    Attributes
    ----------
    model_class, layout, weights : str
        The model's class name, its ``ParamLayout`` fingerprint and a hash of its ``state_dict``.
    data_fingerprint : str
        Hash of the evaluation inputs and targets (after ``max_samples`` sub-sampling).
    n_samples : int
        Number of evaluation samples.
    directions_fingerprint, n_directions, scheme : str, int, str
        The directions' hash, count and scheme name.
    grid : dict
        ``Grid.to_json()``: ``{"x": [start, stop, num], "y": [start, stop, num] or None}``.
    settings : dict
        ``EvalSettings.to_json()`` without the speed-only fields.
    metric_names : tuple of str
        Metrics evaluated next to the loss, in column order.
    loss_fingerprint : str or None
        Hash of the pickled loss function; None for the default cross-entropy.
    bn_data_given : bool
        Whether separate data re-estimates BatchNorm statistics (``mode="bn-recompute"``).
    bn_data_fingerprint : str or None
        That data's hash (``evaluate.data_key``), so a store never resumes with other BatchNorm data.
    metric_fingerprints : dict or None
        For metrics given as ``{name: callable}``, each callable's hash (as the loss's), so a store
        never resumes with another function under the same name; None for built-in metrics.
    bn_pass_size : int or None
        Samples per pass of the BatchNorm re-estimate when it takes more than one pass (the passes
        are averaged, so their split is part of the values); None for one pass.
    quantity : dict or None
        ``{"name": "hessian", **options}`` for a quantity other than the loss, else None.
    """

    model_class: str
    layout: str
    weights: str
    data_fingerprint: str
    n_samples: int
    directions_fingerprint: str
    n_directions: int
    scheme: str
    grid: Mapping[str, Any]
    settings: Mapping[str, Any]
    metric_names: tuple[str, ...]
    loss_fingerprint: str | None = None
    bn_data_given: bool = False
    bn_data_fingerprint: str | None = None
    bn_pass_size: int | None = None
    metric_fingerprints: Mapping[str, str | None] | None = None
    quantity: Mapping[str, Any] | None = None
    version: int = field(default=SPEC_VERSION)

    def to_json(self) -> dict:
        """The spec as stored in a store's manifest and hashed into ``key``."""
        spec = {
            "version": self.version,
            "model": {"class": self.model_class, "layout": self.layout, "weights": self.weights},
            "data": {"fingerprint": self.data_fingerprint, "n_samples": self.n_samples},
            "directions": {"fingerprint": self.directions_fingerprint, "n": self.n_directions,
                           "scheme": self.scheme},
            "grid": dict(self.grid),
            "eval": {**self.settings, "metrics": list(self.metric_names),
                     "loss_fingerprint": self.loss_fingerprint,
                     "bn_data": "given" if self.bn_data_given else None},
        }
        # added after version 1's keys were in use: present only where they apply, so older keys stay valid
        if self.bn_data_given and self.bn_data_fingerprint is not None:
            spec["eval"]["bn_data"] = {"fingerprint": self.bn_data_fingerprint}
        if self.bn_pass_size is not None:
            spec["eval"]["bn_pass_size"] = self.bn_pass_size
        if self.metric_fingerprints:
            spec["eval"]["metric_fingerprints"] = dict(self.metric_fingerprints)
        if self.quantity is not None:
            spec["quantity"] = dict(self.quantity)
        return spec

    @property
    def key(self) -> str:
        """The hash a store resumes by (``spec_key`` of ``to_json()``)."""
        return spec_key(self.to_json())


__all__ = ["hash_tensor", "hash_array", "data_fingerprint", "tree_fingerprint", "model_fingerprint",
           "parameters_fingerprint",
           "code_fingerprint", "globals_fingerprint", "globals_and_structures", "source_structure", "module_settings",
           "spec_key", "SurfaceSpec"]
