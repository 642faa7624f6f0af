"""Direction schemes by name: one function that the CLI and the Explorer share.

``make_directions(scheme, model, example, ndim=..., ...)`` returns ``Directions``
for the schemes in ``SCHEMES``; ``example`` is a zoo ``Example`` (or None for a
user's model), needed by schemes that use a trajectory or a pair of minimizers.
"""
from __future__ import annotations

from pathlib import Path

from .errors import LandscapeError, check_choice

SCHEMES = ("random", "random-orthogonal", "interpolate", "plane3", "pca", "hessian")
VOLUME_SCHEMES = ("random", "random-orthogonal", "hessian")  # the schemes that give three directions
HESSIAN_MAX_SAMPLES = 512  # samples for the Hessian eigenvectors when the caller does not choose
#: which of ``make_directions``' options norm, ignore and seed each scheme reads (the Hessian's seed starts its
#: Lanczos iteration); the CLI refuses a flag its scheme ignores, the Explorer disables the control
SCHEME_READS = {"random": ("norm", "ignore", "seed"), "random-orthogonal": ("norm", "ignore", "seed"),
                "interpolate": (), "plane3": (), "pca": ("ignore",), "hessian": ("seed",)}


def make_directions(scheme: str, model, ex, *, ndim: int, norm: str = "filter", ignore="biasbn", seed: int = 0,
                    data=None, loss_fn=None, target_key: str | int | None = "labels", others=None, trajectory=None,
                    path_data=None, path_settings=None):
    """``(base model, Directions)``: the surface is centred on the base model (``model``
    itself for random, pca and hessian schemes and for a pair or plane through ``others``; the
    first model of the example's pair or plane otherwise).

    ``interpolate`` runs from ``model`` to ``others[0]`` and ``plane3`` spans the plane through
    ``model`` and ``others[:2]`` when ``others`` (models of ``model``'s architecture, e.g. from
    the CLI's ``--model-file2``/``--model-file3``) is given, else through the example's
    minimizers (or checkpoints), named on the axes by the keys of a dict of minimizers
    ("interpolation small-batch → large-batch"; "trained", "checkpoint k" otherwise). ``pca`` uses
    ``trajectory`` (checkpoints as ``pca_directions`` takes them) or else the example's; ``hessian`` the
    eigenvectors of the largest (and, for a plane, most negative; for a volume, those two and the second
    largest) eigenvalue on ``data`` (default: the example's training split, first ``HESSIAN_MAX_SAMPLES``
    of a fixed-seed subset), its targets where ``target_key`` says (``data.read_data``). Schemes whose
    coordinates are not ±1-sized suggest a range in ``provenance["x_range"]``/``["y_range"]``. With
    ``path_data`` (the surface's data) a ``pca`` plane's checkpoints are evaluated on it
    (``trajectory.checkpoint_losses``, with ``path_settings``, the surface's ``EvalSettings``) into
    ``provenance["path_loss"]``, so its figure shows each checkpoint's true loss beside the plane's.
    """
    from . import directions as dirs
    from . import model_paths

    check_ndim(scheme, ndim)
    if scheme == "random":
        return model, dirs.random_directions(model, n=ndim, norm=norm, ignore=ignore, seed=seed)
    if scheme == "random-orthogonal":
        return model, dirs.random_directions(model, n=ndim, norm=norm, ignore=ignore, seed=seed, orthogonalize=True)
    if scheme == "interpolate":
        if ex is None and not others:
            raise LandscapeError("directions 'interpolate' needs a second model to interpolate to (a zoo model "
                                 "has its minimizer pair); for your own, give its checkpoint (CLI: --model-file2 "
                                 "FILE.pt) or use lnb.interpolation_direction(a, b)")
        (a, b), names = ((model, others[0]), ("a", "b")) if others else _pair(ex)  # the example's names for its models
        d = model_paths.interpolation_direction(a, b, include_buffers=True, names=names)
        return a, _with_range(d, x=[-0.5, 1.5])
    if scheme == "plane3":
        (a, b, c), names = ((model, *others[:2]), ("a", "b", "c")) if others and len(others) >= 2 else _three(ex)
        d = model_paths.plane_directions(a, b, c, include_buffers=True, names=names)
        return a, _with_range(d, x=[-0.5, 1.5], y=[-0.5, 1.5])
    if scheme == "pca":
        known = checkpoint_count(ex) if ex is not None else 0  # None: not known without reading them
        if trajectory is None and known is not None and known < ndim + 1:
            line = " (or draw a 1D line: 2 checkpoints give one direction)" if known == 2 else ""
            raise LandscapeError(f"directions 'pca' needs a training trajectory of at least {ndim + 1} checkpoints "
                                 f"for {ndim} directions, and {_name(ex) if ex is not None else 'the model'} has "
                                 f"{known}{line}; for yours, give them (CLI: --checkpoints A.pt B.pt ..., Explorer: an "
                                 "object with .trajectory) or use lnb.pca_directions(checkpoints, final=model)")
        from .trajectory import checkpoint_losses, in_training_order, pca_directions

        given = ex.trajectory if trajectory is None else trajectory
        # files in a glob's order, put in training order once here: the files and losses named below are the
        # path's points' (ordered in pca_directions alone, they named another checkpoint's file; review s59)
        given, _ = in_training_order(given, "landscape_nb.pca_directions")
        d = pca_directions(given, final=model, n=ndim, ignore=ignore)
        if isinstance(given, (list, tuple)) and given and all(isinstance(c, (str, Path)) for c in given):
            d = d.with_provenance(checkpoints=[str(c) for c in given])  # the path's points named by their files
        if path_data is not None:
            losses = checkpoint_losses(given, model, path_data, loss_fn=loss_fn, settings=path_settings)
            d = d.with_provenance(path_loss=[float(v) for v in losses])
        return model, d
    if scheme == "hessian":
        from .hessian import hessian_directions

        max_samples = None
        if data is None:
            if getattr(ex, "train", None) is None:
                raise LandscapeError("directions 'hessian' need data to compute the Hessian on; got none and no "
                                     "example with a training split (.train): pass data=(inputs, targets)")
            data, max_samples = ex.train, HESSIAN_MAX_SAMPLES
        loss_fn = loss_fn if loss_fn is not None else getattr(ex, "loss_fn", None)
        which = {1: ("max",), 2: ("max", "min"), 3: ("max", "min", "max2")}[ndim]  # a volume: the plane's, then λ_2
        zoo_default = max_samples is not None  # the zoo's training split, not the data the surface is computed on
        d = hessian_directions(model, data, which=which, loss_fn=loss_fn, seed=seed, max_samples=max_samples,
                               data_name="training" if zoo_default else None, target_key=target_key)
        if zoo_default:
            d = d.with_provenance(hessian_data=f"training split, fixed-seed subset of {max_samples}")
        return model, d
    raise AssertionError(f"scheme {scheme!r} is in SCHEMES but has no branch")  # unreachable


def check_ndim(scheme: str, ndim: int) -> None:
    """Raise ``LandscapeError`` unless ``scheme`` (one of ``SCHEMES``) gives ``ndim`` directions (1 a
    line, 2 a plane, 3 a volume); the message names the API's and the CLI's and Explorer's words."""
    if ndim not in (1, 2, 3):
        raise LandscapeError(f"ndim={ndim!r}; expected 1 (a line), 2 (a plane) or 3 (a volume)")
    check_choice("direction scheme", scheme, SCHEMES)
    if ndim == 3 and scheme not in VOLUME_SCHEMES:
        raise LandscapeError(f"directions {scheme!r} give a line or a plane; a volume (ndim=3, CLI --grid 21x21x21) "
                             f"needs three directions: use {' or '.join(VOLUME_SCHEMES)}, or a 1D or 2D grid")
    if scheme == "interpolate" and ndim != 1:
        raise LandscapeError(f"directions 'interpolate' is a 1D scan between two models; asked for ndim={ndim}: "
                             "use a 1D grid (CLI --grid 51, Explorer '1D line')")
    if scheme == "plane3" and ndim != 2:
        raise LandscapeError(f"directions 'plane3' is a plane through three models; asked for ndim={ndim}: "
                             "use a 2D grid (CLI --grid 31x31, Explorer '2D plane')")


def _with_range(d, **ranges):
    """``d`` with a suggested ``{axis}_range`` for each axis that has none yet."""
    return d.with_provenance(**{f"{axis}_range": r for axis, r in ranges.items()
                                if f"{axis}_range" not in d.provenance})


def _pair(ex):
    """``((a, b), names)``: the two models an interpolation runs between, the minimizer pair (named by the
    keys of a dict of them), else the first checkpoint and the trained model."""
    minimizers, names = _minimizers(ex)
    if len(minimizers) >= 2:
        return (minimizers[0], minimizers[1]), tuple(names)
    t = _checkpoints(ex)
    if not t:
        has = f"{len(minimizers)} minimizer (.minimizers; a line needs two)" if minimizers else \
            "no minimizer pair (.minimizers)"
        raise LandscapeError(f"directions 'interpolate': {_name(ex)} has {has} and no "
                             "trajectory (.trajectory) to take the line's start from; expected one of them (or "
                             "use lnb.interpolation_direction(a, b))")
    return (_checkpoint_model(ex, t, 0), ex.model), ("checkpoint 0", "trained")


def _three(ex):
    """``((a, b, c), names)``: three models for a plane: the trained model and the minimizer pair, else the
    trained model, the first checkpoint and one mid-training."""
    if ex is None:
        raise LandscapeError("directions 'plane3' needs two more models (a zoo model has its minimizers or its "
                             "trajectory); for your own, give their checkpoints (CLI: --model-file2 B.pt "
                             "--model-file3 C.pt) or use lnb.plane_directions(a, b, c)")
    minimizers, names = _minimizers(ex)
    if len(minimizers) >= 2:
        return (ex.model, minimizers[0], minimizers[1]), ("trained", *names)
    t = _checkpoints(ex)
    if len(t) < 3:
        raise LandscapeError(f"directions 'plane3': {_name(ex)} has {len(t)} checkpoints and no minimizer pair; "
                             "expected at least 3 checkpoints (.trajectory) or two minimizers (.minimizers)")
    mid = len(t) // 2
    return (ex.model, _checkpoint_model(ex, t, 0), _checkpoint_model(ex, t, mid)), ("trained", "checkpoint 0",
                                                                                   f"checkpoint {mid}")


def _minimizers(ex) -> tuple[list, list[str]]:
    """The first two of ``ex.minimizers`` (a dict or a list of models, state dicts or paths to them) as models
    of ``ex.model``'s architecture (fewer when it has fewer), and their names (the dict's keys)."""
    from collections.abc import Mapping

    given = getattr(ex, "minimizers", None)
    pairs = [] if given is None else list(given.items()) if isinstance(given, Mapping) else list(enumerate(given))
    items = [m for _, m in pairs]
    names = [str(k) if isinstance(given, Mapping) and str(k) else f"minimizer {i}" for i, (k, _) in enumerate(pairs)]
    return [_checkpoint_model(ex, items, k, "minimizer") for k in range(min(2, len(items)))], names[:2]


def checkpoint_count(ex) -> int | None:
    """How many checkpoints ``ex.trajectory`` holds (a list, a ``TrajectoryRecorder``, a stacked tensor), 0
    without one, None where that is not known without reading them (a generator)."""
    t = getattr(ex, "trajectory", None)
    if t is None:
        return 0
    if hasattr(t, "n_checkpoints"):  # a TrajectoryRecorder
        return int(t.n_checkpoints)
    try:
        return len(t)
    except TypeError:
        return None


def minimizer_count(ex) -> int | None:
    """How many models ``ex.minimizers`` holds (a dict or a list), 0 without any, None where not known."""
    given = getattr(ex, "minimizers", None)
    if given is None:
        return 0
    try:
        return len(given)
    except TypeError:
        return None


def _checkpoints(ex) -> list:
    """``ex.trajectory`` as a list of checkpoints (a ``TrajectoryRecorder``'s own), [] without one."""
    t = getattr(ex, "trajectory", None)
    if t is None:
        return []
    return list(t.checkpoints) if hasattr(t, "n_checkpoints") else list(t)


def _name(ex) -> str:
    return str(getattr(ex, "name", None) or "the model")


def _checkpoint_model(ex, trajectory, k: int, what: str = "checkpoint"):
    """Checkpoint ``k`` of ``trajectory`` (a state dict, a path to one or a model) as a model of ``ex.model``'s
    architecture; ``what`` names it in messages."""
    from torch import nn

    from .model_paths import model_from_state_dict
    from .trajectory import as_checkpoints

    item = trajectory[k]
    if isinstance(item, nn.Module):
        return item
    try:
        (state,) = as_checkpoints([item], first=k)
    except LandscapeError as exc:
        raise LandscapeError(f"{_name(ex)}'s {what}s: {exc}") from None
    return model_from_state_dict(ex.model, state, f"{what} {k} of {_name(ex)}")
