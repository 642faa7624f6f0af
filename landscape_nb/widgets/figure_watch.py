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
does not read, so a relayout is never acknowledged). `FigureWatch` answers a view's first
report with one probe, an update message that changes only ``layout.editrevision`` (it draws
nothing differently), and calls ``on_deaf`` when no edit from the probe on is acknowledged
within ``after`` seconds. The Explorer then draws the figure again in a new widget, made
while the page is idle.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

DEAF_AFTER = 5.0  # s a probe may wait for its acknowledgement: a view applies it at once (a relayout that draws nothing)
_REPORTS = ("_js2py_traceDeltas", "_js2py_layoutDelta")
_EDIT_IDS = ("trace_edit_id", "layout_edit_id")


class FigureWatch:
    """Watch one ``plotly.graph_objects.FigureWidget`` for a page that no longer applies its updates.

    Parameters
    ----------
    fig : plotly.graph_objects.FigureWidget
        The widget, watched from now on (call `close` when it is replaced).
    on_deaf : callable
        Called once, with no argument, on the kernel's event loop, when a view of ``fig`` has drawn it but
        has not applied a probe sent ``after`` seconds before.
    after : float, optional
        Seconds to wait for the probe's acknowledgement (default: `DEAF_AFTER` when the probe is sent).

    Notes
    -----
    Without an asyncio event loop running where the first report arrives (a plain script: no page, no view)
    nothing is probed. A widget shown in no page is never probed either: no view reports.
    """

    def __init__(self, fig: Any, on_deaf: Callable[[], None], after: float | None = None):
        self.fig = fig
        self.after = after
        self.heard = False  # a view reported: it drew the figure (probed at its first report in an event loop)
        self.acked = False  # a view applied an update sent after the widget was made
        self.deaf = False
        self._on_deaf = on_deaf
        self._timer: asyncio.TimerHandle | None = None
        self._probed: tuple[int, int] | None = None  # the trace and layout edit ids once the probe was sent
        fig.observe(self._on_report, names=list(_REPORTS))

    def _on_report(self, change) -> None:
        msg = change["new"]
        if not isinstance(msg, dict) or self.acked or self.deaf:
            return
        if self._probed is not None:
            trace, layout = (msg.get(k) for k in _EDIT_IDS)
            if (_is_id(trace) and trace >= self._probed[0]) or (_is_id(layout) and layout >= self._probed[1]):
                self.acked = True  # the probe, or an update sent after it, was applied
                self._cancel()
            return
        self.heard = True
        self._probe()

    def _probe(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop to wait on
        revision = self.fig.layout.editrevision
        # an update message, not a relayout: plotly.js (plotly 7.1) sends a view's layout acknowledgement under
        # another name than the kernel's (_js2py_widget_layoutDelta), so only the trace one of an update arrives
        self.fig.plotly_update(relayout_data={"editrevision": revision + 1 if _is_id(revision) else 1})
        # a view reports the ids its model was made with, which may be later than the widget's (a page fetches
        # the widgets' state when it connects): only what is applied after the probe counts
        self._probed = (self.fig._last_trace_edit_id, self.fig._last_layout_edit_id)
        self._timer = loop.call_later(DEAF_AFTER if self.after is None else float(self.after), self._check)

    def _check(self) -> None:
        self._timer = None
        if self.acked or self.deaf:
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
        self._cancel()
        try:
            self.fig.unobserve(self._on_report, names=list(_REPORTS))
        except ValueError:
            pass


def _is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

