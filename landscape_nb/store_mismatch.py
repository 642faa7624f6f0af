"""Why a store refuses to resume, in words: each field two surface specs differ in, with both values.

A store resumes only the surface whose spec key it holds (``store.SurfaceStore``). When the keys
differ, ``describe_differences`` names what changed with its stored and new values where they are
readable (a direction seed or norm, a grid axis, ``max_samples``, the number of samples, the
model's class, an evaluation setting) and gives the fingerprints only where nothing readable
exists (the weights, other data of the same size, another function under the same name). The
readable values come from the spec and, for the directions and the data, from the provenance
stored beside it. No torch or zarr: ``landscape-nb plot`` reads stores without them.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import differing

#: values a spec leaves out where they are the default (so that older keys stay valid)
_DEFAULTS = {"eval.target_key": "labels", "eval.bn_pass_size": None, "eval.clamp_running_var": True}
#: CLI flags of spec and direction fields, named beside them
_FLAGS = {"seed": "--seed", "norm": "--norm", "ignore": "--ignore", "grid": "--grid and --range/--yrange/--zrange",
          "max_samples": "--max-samples", "precision": "--precision", "channels_last": "--channels-last",
          "compile": "--compile/--compile-mode", "mode": "--mode", "target_key": "--target-key",
          "scheme": "--directions"}
#: direction provenance entries the CLI records: the files it read the directions (or their models) from
_FILE_FLAGS = {"model_file2": "--model-file2", "model_file3": "--model-file3", "checkpoints": "--checkpoints",
               "dir_file": "--dir-file"}
_FLAGS.update(_FILE_FLAGS)
#: direction provenance entries that are measured from the vectors, not chosen: never "what changed"
_MEASURED = {"zeroed", "cosine_max", "cosine_max_before", "norms", "scheme"}
_DATA_NOTES = ("source", "structure", "rule")
#: ``data.RANDOM_ITEMS_NOTE`` (not imported: this module reads stores without torch)
_RANDOM_ITEMS = "random_items"
_AXIS_NONE = {"y": "none (a line)", "z": "none (a plane or line)"}


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value)


def _axis(value: Any, axis: str) -> str:
    if value is None:
        return _AXIS_NONE.get(axis, "none")
    start, stop, num = value
    return f"({float(start):g}, {float(stop):g}, {int(num)})"


def _line(label: str, old: Any, new: Any, flag: str | None = None, *, shown: bool = False) -> str:
    """``'label (CLI --flag): OLD stored, NEW now'``; ``shown``: the values are already text."""
    old, new = (old, new) if shown else (_show(old), _show(new))
    return f"{label}{f' (CLI {flag})' if flag else ''}: {old} stored, {new} now"


def _digests(old: Any, new: Any) -> str:
    return f"fingerprint {old or 'none'} stored, {new or 'none'} now"


def _group(flat: Mapping[str, Any], prefix: str) -> Any:
    """The entries of ``flat`` under ``prefix`` as a dict (or the plain value at ``prefix``)."""
    if flat.get(prefix) is not None:
        return flat[prefix]
    inner = {k[len(prefix) + 1:]: v for k, v in flat.items() if k.startswith(prefix + ".") and v is not None}
    return inner or None


def describe_differences(stored_spec: Mapping, spec: Mapping, stored_provenance: Mapping | None = None,
                         provenance: Mapping | None = None) -> list[str]:
    """What differs between a stored surface spec and a new one, one readable phrase per field.

    Parameters
    ----------
    stored_spec, spec : mapping
        ``SurfaceSpec.to_json()`` of the store and of the surface asked for.
    stored_provenance, provenance : mapping, optional
        Their provenance: its ``"directions"`` (seed, norm, ignore...) and ``"data"`` (source,
        structure) entries name what changed where the spec holds only a fingerprint.

    Returns
    -------
    list of str
        E.g. ``["seed (CLI --seed): 0 stored, 1 now", "grid x (CLI --grid ...): (-1, 1, 21) stored,
        (-1, 1, 31) now"]``; fingerprints appear only for what has no readable value. Empty when the
        specs are equal.
    """
    a, b = _flatten(stored_spec), _flatten(spec)
    keys = sorted(set(a) | set(b) | set(_DEFAULTS))
    a = {k: a.get(k, _DEFAULTS.get(k)) for k in keys}
    b = {k: b.get(k, _DEFAULTS.get(k)) for k in keys}
    differ = {k for k in keys if a[k] != b[k]}
    pa, pb = dict(stored_provenance or {}), dict(provenance or {})
    out: list[str] = []
    done: set[str] = set()

    def take(*names: str) -> list[str]:
        found = [n for n in names if n in differ and n not in done]
        done.update(found)
        return found

    # the model
    if take("model.class"):
        out.append(_line("model class", a["model.class"], b["model.class"]))
    if take("model.layout"):
        out.append("the model's parameters (their names and shapes): " + _digests(a["model.layout"], b["model.layout"]))
    if take("model.weights") and not done & {"model.class", "model.layout"}:  # hashed with them: it follows
        out.append("the model's weights (state_dict; another checkpoint, or weights changed after loading): "
                   + _digests(a["model.weights"], b["model.weights"]))

    # the evaluation data: the settings that choose them, their size, their form; digests last
    data_lines = []
    for name in take("eval.max_samples", "eval.subset_seed", "eval.target_key"):
        field = name.split(".", 1)[1]
        old, new = a[name], b[name]
        if field == "max_samples":
            old, new = (_show(v) + (" (all samples)" if v is None else "") for v in (old, new))
            data_lines.append(_line(field, old, new, _FLAGS.get(field), shown=True))
        else:
            data_lines.append(_line(field, old, new, _FLAGS.get(field)))
    if "data.fingerprint" in differ and pa.get("split") != pb.get("split") and None not in (pa.get("split"),
                                                                                         pb.get("split")):
        data_lines.append(_line("split", pa["split"], pb["split"], "--split"))  # named, not only hashed (s37)
    if take("data.n_samples"):
        data_lines.append(_line("number of evaluation samples", a["data.n_samples"], b["data.n_samples"]))
    notes_a, notes_b = pa.get("data") or {}, pb.get("data") or {}
    notes_a, notes_b = (n if isinstance(n, Mapping) else {} for n in (notes_a, notes_b))
    changed = [n for n in _DATA_NOTES if n in notes_a and n in notes_b and notes_a[n] != notes_b[n]]
    if "data.fingerprint" in differ:  # another form read (tuple vs dict, targets' place) explains other values
        data_lines += [_line(f"data {n}", notes_a[n], notes_b[n]) for n in changed if n != "source"]
    if take("data.fingerprint") and not data_lines:  # the same values come from a tuple or a Dataset alike:
        read = (f"; read from {_show(notes_a['source'])} then, {_show(notes_b['source'])} now"  # context only
                if "source" in changed else "")
        random = (" (the Dataset draws at random in __getitem__ or its loader's collate_fn, so every run reads "
                  "other values: see the run's warning)"
                  if any(str(k).endswith(_RANDOM_ITEMS) for k in (*notes_a, *notes_b)) else "")
        data_lines.append(f"the evaluation data ({a['data.n_samples']} samples both times, other values{read}"
                          f"{random}): " + _digests(a["data.fingerprint"], b["data.fingerprint"]))
    out += data_lines

    # the directions: count and scheme from the spec, the settings from the provenance; digests last
    if take("directions.n"):
        out.append(_line("number of directions", a["directions.n"], b["directions.n"]))
    if take("directions.scheme"):
        out.append(_line("direction scheme", a["directions.scheme"], b["directions.scheme"], _FLAGS["scheme"]))
    if take("directions.fingerprint"):
        da, db = pa.get("directions") or {}, pb.get("directions") or {}
        settings = [k for k in da if k in db and k not in _MEASURED
                    and not isinstance(da.get(k), float) and not isinstance(db.get(k), float)
                    and da.get(k) != db.get(k)] if isinstance(da, Mapping) and isinstance(db, Mapping) else []
        settings.sort(key=lambda k: k not in _FILE_FLAGS)  # the files the CLI read the directions from first
        from_file = bool(settings) and "dir_file" in da and "dir_file" in db  # the seed, norm, ...: the file's
        for k in settings:
            label = f"direction {k}" if k in ("seed", "norm", "ignore") else f"directions' {k}"
            flag = _FLAGS.get(k) if k in _FILE_FLAGS or not from_file else None
            # None is the CLI's "none": said both ways ("None now" puzzled a user of --ignore none, trial s45)
            old, new = (f"None ({flag} none)" if v is None and k in ("norm", "ignore") and flag else _show(v)
                        for v in (da.get(k), db.get(k)))
            out.append(_line(label + (" (read from the file)" if flag is None and from_file else ""),
                             old, new, flag, shown=True))
        if not settings and not done & {"directions.scheme", "directions.n", "model.layout"}:
            why = ""
            if "model.weights" in differ and isinstance(db, Mapping) and db.get("norm") not in (None, "none"):
                why = f", as {db.get('norm')} normalization scales them to the other weights"
            elif not isinstance(db, Mapping) or db.get("scheme", "user") == "user":
                why = " (given as vectors: nothing readable tells them apart)"
            out.append(f"the direction vectors, with the same stated settings{why}: "
                       + _digests(a["directions.fingerprint"], b["directions.fingerprint"]))

    # the grid
    for axis in "xyz":
        if take(f"grid.{axis}"):
            out.append(_line(f"grid {axis}", _axis(a[f"grid.{axis}"], axis), _axis(b[f"grid.{axis}"], axis),
                             _FLAGS["grid"], shown=True))

    # how points are evaluated
    if take("eval.loss_name"):
        out.append(_line("loss function", a["eval.loss_name"], b["eval.loss_name"]))
        take("eval.loss_fingerprint")
    if take("eval.loss_fingerprint"):
        out.append(f"the loss function {b['eval.loss_name']!r} (other code or values under the same name): "
                   + _digests(a["eval.loss_fingerprint"], b["eval.loss_fingerprint"]))
    bn = [k for k in differ if k == "eval.bn_data" or k.startswith("eval.bn_data.")]
    if take(*bn):
        old, new = _group(a, "eval.bn_data"), _group(b, "eval.bn_data")
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            out.append("bn_data (the data BatchNorm statistics are re-estimated on): "
                       + _digests(old.get("fingerprint"), new.get("fingerprint")))
        else:
            show = {None: "none", "given": "given"}
            out.append(_line("bn_data (the data BatchNorm statistics are re-estimated on)",
                             show.get(old, "given") if not isinstance(old, Mapping) else "given",
                             show.get(new, "given") if not isinstance(new, Mapping) else "given", shown=True))
    for name in sorted(k for k in differ if k.startswith("eval.metric_fingerprints")):
        take(name)
        metric = name.split(".", 2)[2] if name.count(".") >= 2 else None
        old, new = a[name], b[name]
        if metric is None:  # all built-in on one side
            out.append(_line("metric functions", "built-in" if old is None else _show(old),
                             "built-in" if new is None else _show(new), shown=True))
        elif old is None or new is None:
            out.append(_line(f"metric {metric!r}", "built-in or none" if old is None else f"function {old}",
                             "built-in or none" if new is None else f"function {new}", shown=True))
        else:
            out.append(f"metric {metric!r} (another function under the same name): " + _digests(old, new))
    quantity = [k for k in differ if k == "quantity" or k.startswith("quantity.")]
    if take(*quantity):
        old, new = _group(a, "quantity"), _group(b, "quantity")
        out.append(_line("quantity", old or "loss", new or "loss"))
    if take("eval.clamp_running_var"):
        show = {True: "clamped at 0", False: "left negative (NaN there, as in the reference)"}
        out.append(_line("a BatchNorm running_var the directions make negative", show.get(a["eval.clamp_running_var"]),
                         show.get(b["eval.clamp_running_var"]), shown=True))
    for name in sorted(k for k in differ - done if k.startswith("eval.")):
        field = name.split(".", 1)[1]
        take(name)
        out.append(_line(field, a[name], b[name], _FLAGS.get(field)))
    if take("version"):
        out.append(_line("spec version (another landscape_nb wrote it)", a["version"], b["version"]))
    for name in sorted(differ - done):  # anything newer than this list: its own name
        out.append(_line(name, a[name], b[name]))
    return out


def code_differences(stored: Mapping | None, now: Mapping | None) -> dict[str, str]:
    """What differs, between two surfaces' provenances, in the code their values came from, which the spec key
    leaves out: ``"source"`` (the model classes' source: "then A, B; now A, C"), ``"modules"`` (the modules'
    class, settings, non-persistent buffers or plain attributes) and ``"globals"`` (what the model, loss_fn or
    metrics read from their modules), each as the names that differ; {} where the same or not recorded (older
    stores). Sources compare as syntax trees where both recorded them (`spec.source_structure`): an edit of
    comments or blank lines only is no difference (docstrings count: code may read them)."""
    stored, now = stored or {}, now or {}
    out = {}
    then, code = stored.get("model_code") or {}, now.get("model_code") or {}
    # syntax trees where both have them: an edit of comments alone refused a resume (s36)
    # of one Python version: ast.dump differs between versions for the same source (review s38), so a store of
    # another compares as text (a store from before this was recorded, of the version then: as trees)
    same_python = stored.get("python", now.get("python")) == now.get("python", stored.get("python"))
    source = "structure" if same_python and then.get("structure") and code.get("structure") else "fingerprint"
    if then and code and then.get(source) != code.get(source):
        names = [then.get("classes", []), code.get("classes", [])]
        out["source"] = (f"the source of {', '.join(names[1])} changed" if names[0] == names[1] and names[1] else
                         f"then {', '.join(names[0]) or 'none'}; now {', '.join(names[1]) or 'none'}")
    if then.get("modules") is not None and code.get("modules") is not None and then["modules"] != code["modules"]:
        out["modules"] = (_setting_changes(then.get("settings"), code.get("settings"))
                          or differing(then["modules"], code["modules"], "(the model itself)")
                          + " in their class, settings (e.g. an activation, BatchNorm's eps), non-persistent buffers "
                          "or plain attributes")
    read_then, read = stored.get("code_globals"), now.get("code_globals")
    trees = stored.get("code_structures"), now.get("code_structures")
    if read_then is not None and read is not None and None not in trees and same_python:  # syntax for source
        read_then, read = {**read_then, **trees[0]}, {**read, **trees[1]}
    if read_then is not None and read is not None and (  # a store from before the syntax trees, decorated
            None in trees or stored.get("code_version") != now.get("code_version")):  # functions, closures, defaults
        common = read_then.keys() & read.keys()  # and partials were followed: what it could not record is not
        read_then, read = ({k: v for k, v in d.items() if k in common} for d in (read_then, read))  # compared
    if read_then is not None and read is not None and read_then != read:
        out["globals"] = differing(read_then, read)
        if "source" in out:  # what else differs: the changed classes' own methods are their source again
            own = tuple(f"{name}." for name in {*then.get("classes", []), *code.get("classes", [])})
            beyond = [{k: v for k, v in d.items() if not k.startswith(own)} for d in (read_then, read)]
            if beyond[0] != beyond[1]:
                out["globals_beyond_source"] = differing(*beyond)
    return out


def _around_difference(a: str, b: str, whole: int = 60, context: int = 16) -> tuple[str, str]:
    """Two texts as they are where both fit in ``whole`` characters, else the part where they differ with
    ``context`` characters either side ("…eps=1e-05, mom…" and "…eps=0.5, mom…")."""
    if len(a) <= whole and len(b) <= whole:
        return a, b
    start = next((i for i, (p, q) in enumerate(zip(a, b)) if p != q), min(len(a), len(b)))
    end = 0  # common suffix, not into the common prefix
    while end < min(len(a), len(b)) - start and a[-1 - end] == b[-1 - end]:
        end += 1

    def part(t: str) -> str:
        lo, hi = max(0, start - context), min(len(t), len(t) - end + context)
        return ("…" if lo else "") + t[lo:hi] + ("…" if hi < len(t) else "")

    return part(a), part(b)


def _setting_changes(then: Mapping | None, now: Mapping | None) -> str:
    """``"the model itself: t was 1.0, now 2.0; module 1: its class was ...ReLU, now ...Tanh"`` (at most six)
    from two ``code_fingerprint``'s ``"settings"``; "" where either has none (older stores) or none of
    their texts differ (a change past the `spec.SETTING_TEXT` characters kept)."""
    if not then or not now:
        return ""
    changes: dict[str, list[str]] = {}
    for name in dict.fromkeys([*then, *now]):
        where = f"module {name}" if name else "the model itself"
        if name not in then or name not in now:
            changes[f"{where} {'is new' if name not in then else 'is gone'}"] = []
            continue
        for key in dict.fromkeys([*then[name], *now[name]]):
            was, is_ = then[name].get(key, "(none)"), now[name].get(key, "(none)")
            if was != is_:
                what = {"class": "its class", "settings": "its extra_repr()"}.get(key, key)
                was, is_ = _around_difference(was, is_)
                changes.setdefault(f"{where}: ", []).append(f"{what} was {was}, now {is_}")
    said = [f"{where}{'; '.join(items)}" for where, items in list(changes.items())[:6]]
    more = f"; and {len(changes) - 6} more modules" if len(changes) > 6 else ""
    return "; ".join(said) + more


__all__ = ["code_differences", "describe_differences"]
