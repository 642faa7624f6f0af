"""The option vocabularies that menus and parsers list, importable without torch.

``landscape-nb --help`` and the Explorer's menus list them before any model is loaded; the
modules that act on them (`landscape_nb.directions`, `landscape_nb.evaluate`) import them from here.
"""
from __future__ import annotations

NORMS = ("filter", "layer", "weight", "none")  # direction normalizations (Li et al. 2018, §4: "filter")
PRECISIONS = ("fp32", "tf32", "bf16")  # evaluation precisions
#: ``torch.compile`` modes ``compile=`` takes besides True (the default mode) and False; "reduce-overhead"
#: and "max-autotune" also capture CUDA graphs on a GPU
COMPILE_MODES = ("reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: how BatchNorm runs at each point: its running statistics, or statistics re-estimated there ("bn" is
#: an alias compute_surface also takes for the second)
EVAL_MODES = ("eval", "bn-recompute")

__all__ = ["COMPILE_MODES", "EVAL_MODES", "NORMS", "PRECISIONS"]
