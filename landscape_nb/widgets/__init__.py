"""The Explorer: pick a model, a direction scheme and a grid, watch the landscape fill in live.

    import landscape_nb as lnb
    explorer = lnb.Explorer()                                  # the bundled zoo
    explorer = lnb.Explorer(models={"mine": (model, (inputs, targets))})
    explorer                                                   # show the panel; press Compute

Two layers, as in ipympl: `ExplorerState` (``state.py``) holds the typed (traitlets)
state, turns it into an `ExplorerSpec` and runs ``compute_surface`` in a background
thread; it knows nothing about widgets and works with no browser attached. `Explorer`
(``view.py``) is the ipywidgets view: controls linked to the state, a live Plotly
``FigureWidget``, a progress bar, a status line and buttons.

Threads: the computation runs in a worker thread. Its tile callback never touches the
state directly; it posts the update to the kernel's event loop (captured when Compute is
pressed), so traits and the figure change only on the kernel's main thread and the kernel
stays responsive. Figure updates are coalesced to at most one per ``update_interval`` (each
one makes the browser redraw a WebGL surface); the final surface is always shown. Without
an event loop (a plain script) every update applies at once, on the worker thread
(``_ui_thread.py``).

The view's names load on first use, so ``landscape_nb.widgets.state`` works without ipywidgets.
"""
from .figure_watch import figure_widget
from .state import CLUSTERS, ExplorerSpec, ExplorerState

__all__ = ["Explorer", "ExplorerState", "ExplorerSpec", "SCHEME_LABELS", "CLUSTERS", "figure_widget"]

_VIEW = ("Explorer", "SCHEME_LABELS", "CLUSTER_LABELS", "FIGURE_WIDTH")


def __getattr__(name):
    if name in _VIEW:
        from . import view

        return getattr(view, name)
    raise AttributeError(f"module 'landscape_nb.widgets' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_VIEW})
