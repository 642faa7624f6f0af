"""Notice a figure widget whose page no longer applies the kernel's updates.

anywidget (0.11) handles the kernel's messages to a widget only once the widget's ESM has
loaded, and gives up on a widget whose ESM has not loaded within 2 s of the widget's model
being made in the page ("[anywidget] Failed to initialize model." in the browser console).
Every later message to that widget is dropped, yet its view still draws, once the ESM has
loaded, the state the widget was made with. plotly's ``FigureWidget`` carries plotly.js in its
ESM (about 5 MB, loaded once per figure), so a page busy loading (Voilà running a notebook,
several figures at once, a loaded 2-core machine) can be left with a figure that shows no value
of any run: the run finished and the panel said so, while the figure still said "nothing
computed yet" (``tests/test_voila.py`` failed this way about one run in three, sessions 47-49).

A plotly view reports to the kernel when it draws a figure (``_js2py_traceDeltas``, with the
edit id its model was made with) and after each update or restyle it applies (with that edit's
id; plotly.js 7.1 sends the layout's report as ``_js2py_widget_layoutDelta``, which the kernel
does not read, so a relayout is never acknowledged), and ipywidgets counts a widget's views
(``_view_count``, which plotly turns on). `FigureWatch` answers a new view with a probe, an
update message that changes only ``layout.editrevision`` (it draws nothing differently), and
calls ``on_deaf`` when no edit from the probe on is acknowledged within ``after`` seconds. The
Explorer then draws the figure again in a new widget, made while the page is idle.
"""
from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

# s a probe may wait for its acknowledgement. A view applies it at once (it draws nothing new), but a page busy
# loading other figures' plotly.js and drawing WebGL on a loaded 2-core box took over 5 s (a healthy figure was
# drawn again, tests/test_voila.py under load): a page that drops the updates shows its figure 15 s late instead
DEAF_AFTER = 15.0
LATE = 0.5  # s: a check run later than this after its time (the kernel was busy) waits GRACE s more, so that an
GRACE = 1.0  # acknowledgement queued behind it is read first


@functools.cache
def _widget_class() -> type:
    import plotly.graph_objects as go

    class LiveFigureWidget(go.FigureWidget):
        """A ``FigureWidget`` that keeps the properties the kernel set when a page reports drawing them."""

        @staticmethod
        def _remove_overlapping_props(input_data, delta_data, prop_path=()):
            return []

    return LiveFigureWidget


def figure_widget(fig: Any):
    """``fig`` as a ``plotly.graph_objects.FigureWidget`` whose own copy of the figure keeps what the kernel set.

    plotly's widget (7.1) takes a property out of the kernel's copy of a trace, as a browser default, whenever a
    page reports drawing it otherwise than the widget was made with; its page compares against the data the
    widget was made with, which restyles and updates never change, so every property the kernel changed since
    is taken out. The figure still draws, and ``fig.data[0].x`` reads the default; but ``fig.to_dict()``, and so
    an HTML export or a copy drawn again, lost them: a live line exported from JupyterLab was drawn against the
    point index, its hover text gone (trial s60). This widget keeps them (they are the values drawn).

    Parameters
    ----------
    fig : plotly.graph_objects.Figure or dict
        What ``go.FigureWidget(fig)`` takes, e.g. ``lnb.plot.live(surface)``.

    Returns
    -------
    plotly.graph_objects.FigureWidget
        A new widget (of a subclass); update it with ``lnb.plot.update(widget, surface)``.
    """
    return _widget_class()(fig)


class FigureWatch:
    """Watch one ``plotly.graph_objects.FigureWidget`` for a page that no longer applies its updates.

    A probe is sent when a new view of the widget is counted (``_view_count`` rises: a page drew it, a page
    reloaded, another tab opened) and, for a front end that counts no views, at a view's first report.

    Parameters
    ----------
    fig : plotly.graph_objects.FigureWidget
        The widget, watched from now on (call `close` when it is replaced).
    on_deaf : callable
        Called once, with no argument, on the kernel's event loop, when a probe has not been applied ``after``
        seconds after it was sent.
    after : float, optional
        Seconds to wait for the probe's acknowledgement (default: `DEAF_AFTER` when the probe is sent).

    Notes
    -----
    Without an asyncio event loop running where the probe would be sent (a plain script: no page, no view)
    nothing is probed. The watch runs on the kernel's event loop thread, where comm messages and the Explorer's
    updates of the figure run too: the probe needs no lock. The acknowledgements name no page: with two pages
    open, one that applies updates answers for both.
    """

    def __init__(self, fig: Any, on_deaf: Callable[[], None], after: float | None = None):
        self.fig = fig
        self.after = after
        self.deaf = False
        self._on_deaf = on_deaf
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0  # the loop's time the pending check is for
        self._probed: int | None = None  # the trace edit id of the probe awaiting its acknowledgement
        self._answered = False  # a probe was applied: a view's report no longer calls for one (a new view does)
        self._closed = False
        fig.observe(self._on_report, names="_js2py_traceDeltas")
        fig.observe(self._on_views, names="_view_count")

    def _on_report(self, change) -> None:
        msg = change["new"]
        if not isinstance(msg, dict) or self.deaf:
            return
        edit = msg.get("trace_edit_id")
        if self._probed is not None:
            # a view reports the id its model was made with, which may be later than the widget's first (a page
            # fetches the widgets' state when it connects): only an edit from the probe on is its answer
            if _is_id(edit) and edit >= self._probed:
                self._probed = None
                self._answered = True
                self._cancel()
        elif not self._answered:
            self._probe()  # a view drew the figure, not counted (a front end that counts no views)

    def _on_views(self, change) -> None:
        old, new = change["old"], change["new"]
        if _is_id(new) and (not _is_id(old) or new != old) and new > 0 and not self.deaf:
            # a new view: its page may be one that gave up on the widget; a view gone: the page that answered
            # for both may have been that one (trial s60)
            self._probe()

    def recheck(self) -> None:
        """Probe again, where a page has counted a view of the figure and no probe awaits its answer.

        A probe's answer names no page: with two pages open, a page that applies updates answers for one that
        dropped them. Once that page closed (a tab closed: its view is not always uncounted), the other drew
        none of the later runs (trial s60). The Explorer calls this after each run."""
        views = getattr(self.fig, "_view_count", None)
        if _is_id(views) and views > 0 and self._probed is None and not self.deaf and not self._closed:
            self._probe()  # not for a closed panel's figure (review s60: a new widget made on it)

    def _probe(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop to wait on
        revision = self.fig.layout.editrevision
        # an update message, not a relayout: plotly.js (plotly 7.1) sends a view's layout acknowledgement under
        # another name than the kernel's (_js2py_widget_layoutDelta), so only the trace one of an update arrives
        self.fig.plotly_update(relayout_data={"editrevision": revision + 1 if _is_id(revision) else 1})
        self._probed = self.fig._last_trace_edit_id
        self._wait(loop, DEAF_AFTER if self.after is None else float(self.after))

    def _wait(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self._cancel()
        self._due = loop.time() + seconds
        self._timer = loop.call_later(seconds, self._check)

    def _check(self) -> None:
        self._timer = None
        if self._probed is None or self.deaf:
            return
        loop = asyncio.get_running_loop()
        if loop.time() - self._due > LATE:  # the loop was busy (a cell running): the answer may be queued
            self._wait(loop, GRACE)
            return
        self.deaf = True
        self.close()
        logger.info("the page did not apply a probe of its figure in time: the figure widget is drawn again")
        self._on_deaf()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """Stop watching (the widget was replaced or closed)."""
        self._closed = True
        self._cancel()
        for handler, name in ((self._on_report, "_js2py_traceDeltas"), (self._on_views, "_view_count")):
            try:
                self.fig.unobserve(handler, names=name)
            except ValueError:
                pass


def _is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

