"""The Explorer's view: ipywidgets controls linked to an `ExplorerState`, and a live figure.

All the computing, validation and threading lives in the state (`.state`); this module
only lays out widgets, links them to the state's traits and redraws on its changes.
"""
from __future__ import annotations

import html
import logging
import threading
from copy import deepcopy
from pathlib import Path
from typing import Any, Mapping

import ipywidgets as w
import traitlets as t

from ..directions import NORMS
from ..errors import LandscapeError
from ..plot._common import as_written
from ..surface import Surface
from .figure_watch import FigureWatch, figure_widget
from .request import SCHEME_LABELS, empty_surface, figure_title, ignored_controls
from .state import POINTS, ExplorerSpec, ExplorerState

logger = logging.getLogger(__name__)

CLUSTER_LABELS = {"in-process": "in-process (this kernel)", "local": "local Dask cluster",
                  "cuda": "GPU workers (dask-cuda)", "address": "scheduler address", "given": "given client"}
# JupyterLab's widget manager marks every widget view "jupyter-widgets-disconnected" when the kernel restarts, and
# draws nothing for it: a panel computing then said "running" for good, its buttons pressable to no effect (trial
# s47). Its status line now says so instead (the message beside it, "Computing...", is hidden), and its buttons and
# controls are dimmed and inert.
DISCONNECTED_TEXT = ("not connected: the kernel restarted, so this panel no longer runs anything (its figure stays "
                     "as it was); run the cell again for a new panel")
DISCONNECTED_CSS = (
    ".lnb-explorer .lnb-status.jupyter-widgets-disconnected > *, .lnb-explorer .lnb-message.jupyter-widgets-disconnected"
    " > * { display: none; }\n"
    f'.lnb-explorer .lnb-status.jupyter-widgets-disconnected::after {{ content: "{DISCONNECTED_TEXT}"; '
    "color: #b3261e; white-space: normal; }\n"
    ".lnb-explorer .widget-button.jupyter-widgets-disconnected, .lnb-explorer .widget-inline-hbox"
    ".jupyter-widgets-disconnected:not(.widget-html), .lnb-explorer .jupyter-widgets-disconnected.widget-progress "
    "{ opacity: 0.45; pointer-events: none; }"
)
FIGURE_WIDTH = 940  # px, the live 2D figure (3D surface + contours side by side)
REDRAWS = 2  # new widgets for a figure whose page drops its updates (figure_watch), then the panel says so
DEAF_TEXT = ('<span style="color: #b3261e">This page does not apply the figure\'s updates: its plotting code '
             f"(plotly.js) did not load in time, {REDRAWS + 1} times. The panel still computes; reload the page, or "
             "press Export HTML for the figure.</span>")


_BY_CELL: dict[str, Any] = {}  # the notebook cell that made each panel -> a weak reference to it


def _cell_id() -> str | None:
    """The id of the notebook cell running now (JupyterLab and Notebook 7 send it with each execution), or None
    outside a kernel or from a front end that does not."""
    try:
        from IPython import get_ipython

        kernel = getattr(get_ipython(), "kernel", None)
        return kernel.get_parent("shell").get("metadata", {}).get("cellId") if kernel is not None else None
    except Exception:  # noqa: BLE001 - any other front end: no cell to go by
        return None


def _replace_in_cell(panel: Explorer) -> None:
    """A cell run again replaces its panel on screen: the old panel's computation, which nothing could cancel
    any more, is cancelled, and its clusters closed (in the background: the new panel does not wait); its
    widgets hear nothing more from it."""
    import weakref

    cell = _cell_id()
    if cell is None:
        return
    old = _BY_CELL.get(cell)
    old = old() if old is not None else None
    _BY_CELL[cell] = weakref.ref(panel)
    if old is not None and old is not panel:
        if old.state.running:
            logger.info("the Explorer's cell ran again: cancelling the computation of the panel it replaced")
        old.state.unobserve_all()  # its last updates would go to widgets no longer on the page (browser errors)
        threading.Thread(target=old.state.close, name="landscape_nb-explorer-replaced", daemon=True).start()


class Explorer(w.VBox):
    """An ipywidgets panel for loss landscapes (Li et al. 2018): pick, compute, watch, export.

    The panel shows, top to bottom: the model, the direction scheme and a 1D/2D toggle;
    the normalization (filter, layer, weight or none), whether biases and BatchNorm get a
    zero direction, and the seed (the normalization is disabled for all but random directions, the
    biasbn box for the schemes between models and the Hessian's, the seed for the schemes between
    models and pca, which draw nothing at random; see ``widgets.request.ignored_controls``);
    the x range and points (and the y row for a plane), with "auto range" and its rise factor; the
    data split (those the picked model has: one given as (model, data) has only "test"), the metric,
    log scale and max samples; the cluster (in-process, a local Dask cluster, GPU workers or, where
    allowed, a scheduler address) and the time budget; Compute, Cancel, Export HTML/PNG and the
    export path; a progress bar and status line (points done, points per second, the workers, or
    that a Dask cluster is starting until it is up, a link to the Dask dashboard); a message line;
    and the live Plotly figure, which fills in tile by tile (a 3D surface and its contour, with a
    PCA plane's training path, for a plane; loss and metric on twin axes for a line). The figure
    widget is made with the panel and reused by every Compute of the same shape, so a Compute sends
    values, not plotly.js again.

    "auto range": a scheme's own range where it has one (the interpolation's minimizers at 0
    and 1, the plane's three models, the PCA path), otherwise, per direction and sign, the
    distance at which the loss reaches ``rise`` × the centre's loss
    (`landscape_nb.autorange.auto_range`); the range found is shown in the controls.

    Parameters
    ----------
    models : mapping of str to (model, data) or (model, data, loss_fn), optional
        The models to offer, by name. ``model`` is a ``torch.nn.Module``; ``data`` is
        ``(inputs, targets)`` with a leading sample axis (or a Dataset, a DataLoader or a
        callable returning one); ``loss_fn`` defaults to cross-entropy. A value may also be
        an object with ``.model`` and ``.test`` (and optionally ``.train``, ``.loss_fn``),
        such as a zoo ``Example``. None (default): the bundled zoo, each model trained on
        first use and then cached.
    client : None, str or distributed.Client, optional
        Where to evaluate: None (default, in this kernel), ``"local"`` (a local Dask
        cluster, started on the first Compute and reused), ``"cuda"`` (dask-cuda GPU
        workers), a scheduler address such as ``"tcp://host:8786"``, or a running
        ``distributed.Client`` (used and left open). An address given here is allowed even
        when ``allow_addresses`` is False.
    allow_addresses : bool or list of str, default False
        Whether the panel offers "scheduler address": False (default) never; True any
        address typed in; a list only those addresses. Off by default because whoever can
        type an address can point the kernel at a scheduler they run, whose (pickled)
        replies execute code in the kernel: keep it off on a served page (Voilà).
    export_dir : str or path, optional
        The directory exports are confined to (default: the working directory when the
        Explorer is made, the notebook's directory in JupyterLab and Voilà). A relative
        "export to" path is taken from it; a path that resolves outside it (``..``, an
        absolute path, a symbolic link pointing out) or has another suffix than the
        export's (.html; .png, .svg, .pdf, .jpeg, .webp) is refused and nothing is written.
    **controls
        Initial values of the controls, by the names of `ExplorerState`'s traits, e.g.
        ``x_points=31, y_points=31, scheme="pca", time_budget=600`` (seconds).

    Attributes
    ----------
    state : ExplorerState
        The typed state and the computation; usable without a browser.
    figure : plotly.graph_objects.FigureWidget or None
        The live figure, created on the first Compute.
    controls : dict of str to ipywidgets.Widget
        The control widgets, keyed by trait name.
    surface, directions, centre : Surface, Directions, torch.nn.Module or None
        The shown run's values, the directions it was computed along and the model at its centre (None
        before a run).

    Raises
    ------
    LandscapeError
        ``models`` is empty or not a mapping, one of its values is not a model with data,
        ``client`` is none of the above, ``allow_addresses`` is not a bool or list of
        strings, ``export_dir`` is not an existing directory, a keyword names no control, or
        ``scheme`` names one the first model cannot give (see ``widgets.models.schemes_for``) or
        ``split`` one it lacks (``"train"`` for a model given as (model, data): ``splits_for``).
    traitlets.TraitError
        A control's value is not allowed (e.g. ``ndim=3`` or an unknown ``norm``).

    Notes
    -----
    A Compute whose estimated time (grid points times the measured seconds per point,
    divided by the workers) is over the time budget is refused, with a resolution that
    fits; a run that takes longer than the budget all the same (the estimate times forward
    passes only) stops there as a Cancel does, says so, and the next Compute goes on from
    its points. Errors during a computation appear as one line in the panel; the exception is
    kept in ``explorer.state.last_error``.

    A page that gave up on the figure widget while loading (anywidget drops every message to
    a widget whose plotting code, plotly.js, did not load within 2 s) would show no value of
    any run: the panel notices that the page does not apply a probe, and draws the figure
    again in a new widget (`landscape_nb.widgets.figure_watch`); after `REDRAWS` tries it says so.

    References
    ----------
    .. [1] H. Li, Z. Xu, G. Taylor, C. Studer and T. Goldstein, "Visualizing the Loss
       Landscape of Neural Nets", NeurIPS 2018.

    Examples
    --------
    >>> import landscape_nb as lnb
    >>> explorer = lnb.Explorer(models={"mine": (net, (x, y))}, x_points=31)
    >>> explorer                      # doctest: +SKIP  (shows the panel; press Compute)
    >>> explorer.compute(wait=True)   # or from code
    """

    def __init__(self, models: Mapping[str, Any] | None = None, client=None, *, allow_addresses=False,
                 export_dir=None, **controls):
        state = ExplorerState(models=models, client=client, allow_addresses=allow_addresses, export_dir=export_dir,
                              **controls)
        self.state = state
        _replace_in_cell(self)
        self.figure = None
        self._figure_watch: FigureWatch | None = None
        self._redrawn = 0  # times the figure was drawn again in a new widget (_redraw_deaf)
        self._figure_run = None
        self._figure_lock = threading.RLock()  # see _on_preview
        wide = {"description_width": "initial"}

        def dd(options, description, width):
            return w.Dropdown(options=options, description=description, style=wide, layout=w.Layout(width=width))

        self.controls: dict[str, w.Widget] = {
            "model_name": dd(state.model_names, "model", "250px"),
            "scheme": dd(_scheme_options(state.schemes), "directions", "330px"),
            "ndim": w.ToggleButtons(options=[("1D line", 1), ("2D plane", 2)], style={"button_width": "80px"}),
            "norm": dd([(f"{n} norm" if n != "none" else "no norm", n) for n in NORMS], "normalize", "200px"),
            "ignore_biasbn": w.Checkbox(description="zero direction for biases / BN (biasbn)", indent=False,
                                        layout=w.Layout(width="280px")),
            # plain number boxes: a bounded one clamped a typed -5 to 0 with no word (trial s47); the state refuses
            "seed": w.IntText(description="seed", style=wide, layout=w.Layout(width="140px")),
            "x_min": w.FloatText(description="x from", style=wide, layout=w.Layout(width="130px")),
            "x_max": w.FloatText(description="to", style=wide, layout=w.Layout(width="110px")),
            "x_points": w.IntSlider(min=POINTS[0], max=POINTS[1], step=2, description="x points", style=wide),
            # in full: 330 px cut "…else where the los…" (trial s60); the rest in its tooltip
            "auto_range": w.Checkbox(description="auto range: where the loss rises", indent=False,
                                     layout=w.Layout(width="auto"),
                                     tooltip="the scheme's own range where it has one (interpolation, plane "
                                             "through three models, PCA), else where the loss reaches the factor "
                                             "beside this box times the model's own loss"),
            "rise": w.FloatText(step=0.5, description="×", style=wide, layout=w.Layout(width="90px")),
            "y_min": w.FloatText(description="y from", style=wide, layout=w.Layout(width="130px")),
            "y_max": w.FloatText(description="to", style=wide, layout=w.Layout(width="110px")),
            "y_points": w.IntSlider(min=POINTS[0], max=POINTS[1], step=2, description="y points", style=wide),
            "split": w.ToggleButtons(options=state.splits, style={"button_width": "60px"}),
            "metric": dd([("loss + accuracy", "accuracy"), ("loss only", "none")], "metric", "220px"),
            "log_scale": w.Checkbox(description="log scale", indent=False, layout=w.Layout(width="110px")),
            "max_samples": w.IntText(description="max samples (0: all)", style=wide, layout=w.Layout(width="210px")),
            "cluster": dd([(CLUSTER_LABELS[c], c) for c in state.clusters()], "cluster", "280px"),
            "address": w.Text(placeholder="tcp://host:8786", description="address", style=wide,
                              layout=w.Layout(width="260px")),
            "time_budget": w.FloatText(description="time budget (s)", style=wide, layout=w.Layout(width="190px")),
            "export_path": w.Text(description="export to", style=wide, layout=w.Layout(width="300px")),
        }
        links = {}
        for name, widget in self.controls.items():
            widget.add_class(f"lnb-{name.replace('_', '-')}")
            links[name] = _ControlLink(state, name, widget, _odd if name in ("x_points", "y_points") else None)
        t.dlink((state, "model_names"), (self.controls["model_name"], "options"))

        def offer(name: str, options) -> Any:
            """Follow the picked model's choices (`schemes_for`, `splits_for`): a menu whose options change moves
            to the first one, so it is unlinked meanwhile and the state's choice stays."""
            def on_change(change) -> None:
                links[name].unlink()
                try:
                    self.controls[name].options = options(change["new"])
                    self.controls[name].value = getattr(state, name)
                finally:
                    links[name].link()
            return on_change

        state.observe(offer("scheme", _scheme_options), "schemes")
        state.observe(offer("split", list), "splits")

        self.compute_button = w.Button(description="Compute", button_style="primary", icon="play")
        self.cancel_button = w.Button(description="Cancel", button_style="warning", icon="stop", disabled=True)
        self.export_button = w.Button(description="Export HTML", icon="download")
        self.export_png_button = w.Button(description="Export PNG", icon="image")
        for b, cls in ((self.compute_button, "compute"), (self.cancel_button, "cancel"),
                       (self.export_button, "export-html"), (self.export_png_button, "export-png")):
            b.add_class(f"lnb-{cls}")
        self.compute_button.on_click(lambda _: self.compute())
        self.cancel_button.on_click(lambda _: self.cancel())
        self.export_button.on_click(lambda _: self._export("html"))
        self.export_png_button.on_click(lambda _: self._export("png"))

        self.progress = w.IntProgress(min=0, max=1, value=0, layout=w.Layout(width="320px"))
        self.status_line = w.HTML()
        self.message_box = w.HTML()
        self.figure_box = w.Box(layout=w.Layout(width="100%", min_height="40px", display="block"))
        for widget, cls in ((self.status_line, "status"), (self.message_box, "message"),
                            (self.figure_box, "figure"), (self.progress, "progress")):
            widget.add_class(f"lnb-{cls}")

        c = self.controls

        def row(children):  # a narrow panel wraps a row: at 900 px its buttons shrank to unlabelled icons and the
            return w.HBox(children, layout=w.Layout(flex_flow="row wrap"))  # seed and toggles went off it (s60)

        self._y_row = row([c["y_min"], c["y_max"], c["y_points"]])
        rows = [
            row([c["model_name"], c["scheme"], c["ndim"]]),
            row([c["norm"], c["ignore_biasbn"], c["seed"]]),
            row([c["x_min"], c["x_max"], c["x_points"], c["auto_range"], c["rise"]]),
            self._y_row,
            row([c["split"], c["metric"], c["log_scale"], c["max_samples"]]),
            row([c["cluster"], c["address"], c["time_budget"]]),
            row([self.compute_button, self.cancel_button, self.export_button, self.export_png_button,
                 c["export_path"]]),
            w.HBox([self.progress, self.status_line]),
            self.message_box,
            self.figure_box,
            w.HTML(f"<style>{DISCONNECTED_CSS}</style>", layout=w.Layout(display="none")),
        ]
        super().__init__(rows, layout=w.Layout(width="100%"))
        self.add_class("lnb-explorer")

        state.observe(self._on_surface, "surface")
        state.observe(self._on_preview, "preview")
        state.observe(self._on_log, "log_scale")
        state.observe(self._on_progress, ["status", "n_done", "n_points", "points_per_s", "workers",
                                          "dashboard_link"])
        state.observe(self._on_message, ["message", "message_kind"])
        state.observe(self._on_status, "status")
        state.observe(self._on_layout, ["ndim", "cluster"])
        state.observe(self._on_scheme, "scheme")
        state.observe(self._on_model, "model_name")
        self._on_layout()
        self._on_scheme()
        self._on_progress()
        self._on_message()
        try:  # plotly.js travels with the first figure widget: send it with the panel, not after Compute
            self._show(empty_surface(state.spec()))
        except LandscapeError:
            pass  # nothing valid to draw yet; the first Compute makes the figure

    # state -> view

    def _on_surface(self, change=None) -> None:
        from .. import plot
        from ..plot.live import live_info

        surf = self.state.surface
        if surf is None:
            return
        with self._figure_lock:  # a new run, or the surface shown before a refused 1D/2D run put back: redrawn
            info = live_info(self.figure) or {}
            promised = info.get("metric") is not None and info["metric"] not in surf.metrics and surf.n_done > 0
            if self.figure is None or self._figure_run != self.state.run_id or info.get("ndim") != surf.ndim or \
                    promised:  # a line drawn with the metric's axis for a model that has none (a regression): without
                if _drawn_empty(self.figure, surf):
                    return  # redrawn with the run's first values and title, in one message
                self._show(surf)
                self._figure_run = self.state.run_id
            else:
                plot.update(self.figure, surf, log=self.state.log_scale)
                _in_panel_words(self.figure)
                title = figure_title(surf)  # the run's first values name what the empty grid could not (a subset)
                if self.figure.layout.title.text != title:
                    self.figure.layout.title.text = title

    def _on_preview(self, change) -> None:
        # nothing computed shown yet; a 1D figure has no WebGL surface or 3D labels to set up
        preview = change["new"]
        # set on the kernel's main thread; a Compute's updates may run on the thread handling widget
        # messages: one of them draws at a time, and a preview never over a computation
        with self._figure_lock:
            if preview is not None and preview.ndim == 2 and self.state.surface is None:
                try:
                    self._show(preview)
                except LandscapeError:
                    pass

    def _show(self, surf: Surface) -> None:
        """Draw ``surf`` as a new live figure: in the figure widget already shown when its traces
        fit (one message with the new values), else in a new widget."""
        from .. import plot
        from ..plot._common import PARTIAL_NOTE, replace_note
        from ..plot.live import live_info

        # a preview (the empty grid of the controls, before any run) describes no run, nor is it a partial one
        # (its red "partial: 0 of 441 points" sat under "nothing computed yet", trial s47)
        preview = self.state.surface is None and not surf.n_done
        title = figure_title(surf) if self.state.surface is not None else _nothing_yet(surf.provenance.get("label"))
        # a 2D live figure always has the same two traces: refill it without building another (~40 ms
        # on the kernel's thread at each Compute); a 1D one's traces depend on the metric
        info = live_info(self.figure)
        refill = surf.ndim == 2 and info is not None and info["ndim"] == 2
        if not refill:
            # 2D: the widget is drawn before it has a width to autosize to; laid out for the one it gets
            fig = plot.live(surf, log=self.state.log_scale, title=title,
                            width=FIGURE_WIDTH if surf.ndim == 2 else None)
            _in_panel_words(fig)
            refill = self.figure is not None and _shape(self.figure) == _shape(fig)
        if refill:
            # the values, ranges, axis titles and title in one batch (plot.update's own: inside another, its edits
            # of the annotations left an empty one, a stray arrow on the contours, trial s46)
            plot.update(self.figure, surf, log=self.state.log_scale, title=title)
            if preview:
                replace_note(self.figure, PARTIAL_NOTE, None)
            _sync_widget_state(self.figure)
            return
        if preview:
            replace_note(fig, PARTIAL_NOTE, None)
        self._redrawn = 0  # a figure of another shape: a new widget, which the page may well take
        self._set_figure(figure_widget(fig))

    def _set_figure(self, fig) -> None:
        """Show ``fig`` (a new ``FigureWidget``) as the live figure, watched for a page that drops its updates."""
        if self._figure_watch is not None:
            self._figure_watch.close()
        self.figure = fig
        self.figure_box.children = [fig]
        self._figure_watch = FigureWatch(fig, self._redraw_deaf)

    def _redraw_deaf(self) -> None:
        """The page drops the live figure's updates (`figure_watch`): draw it again in a new widget, at most
        `REDRAWS` times a panel; then say so above the figure."""
        with self._figure_lock:
            old = self.figure
            if old is None or self._figure_watch is None or self._figure_watch.fig is not old:
                return  # replaced meanwhile
            self._redrawn += 1
            if self._redrawn > REDRAWS:
                self.figure_box.children = [w.HTML(DEAF_TEXT, layout=w.Layout(width="100%")), old]
                return
            self._set_figure(figure_widget(old))
            old.close()

    def _on_status(self, change) -> None:
        if change["new"] == "error" and self.state.surface is not None:
            with self._figure_lock:  # the surface shown before the failed run is back: its title too
                self._show(self.state.surface)
        elif change["new"] == "error" and self.figure is not None:
            with self._figure_lock:  # a refused first run: its empty grid must not keep the refused run's title
                self.figure.layout.title.text = _nothing_yet(self.state.model_name)
        if change["new"] in ("done", "cancelled", "error") and self.figure is not None:
            _sync_widget_state(self.figure)
            if self._figure_watch is not None:
                self._figure_watch.recheck()  # a page left open that drops the updates draws the run

    def _on_model(self, change) -> None:
        with self._figure_lock:  # an empty grid before any run names the model picked, not the first one
            if self.figure is not None and self.state.surface is None:
                self.figure.layout.title.text = _nothing_yet(change["new"])

    def _on_log(self, change) -> None:
        from .. import plot

        with self._figure_lock:
            if self.figure is not None and self.state.surface is not None:
                plot.update(self.figure, self.state.surface, log=change["new"])

    def _on_progress(self, change=None) -> None:
        s = self.state
        running = s.status in ("starting", "running", "cancelling")
        self.compute_button.disabled = running and s.status != "cancelling"  # then it starts once the cancel has
        self.cancel_button.disabled = not running or s.status == "cancelling"
        self.progress.max = max(1, s.n_points)
        self.progress.value = min(s.n_done, self.progress.max)
        self.progress.bar_style = {"done": "success", "cancelled": "warning", "error": "danger"}.get(s.status, "info")
        parts = [f"<b>{s.status}</b>"]
        if s.status == "error":  # the figure is the run before's, put back: a refused 11×11 run said "error · 441 /
            if s.surface is not None:  # 441 points", that run's counts (trial s46)
                parts.append(f"the figure shows the run before ({s.surface.n_done:,} / {s.surface.loss.size:,} points)")
        elif s.n_points:
            parts.append(f"{s.n_done:,} / {s.n_points:,} points")
        if s.points_per_s and s.status != "error":
            parts.append(f"{s.points_per_s:,.1f} points/s")
        if s.workers:
            parts.append(html.escape(s.workers))
        if s.dashboard_link:
            link = html.escape(s.dashboard_link, quote=True)
            parts.append(f'<a href="{link}" target="_blank">Dask dashboard</a>')
        self.status_line.value = " · ".join(parts)

    def _on_message(self, change=None) -> None:
        s = self.state
        if not s.message:
            self.message_box.value = ""
            return
        color = "#a40000" if s.message_kind == "error" else "#333"
        prefix = "<b>Error:</b> " if s.message_kind == "error" else ""
        self.message_box.value = (f'<div class="lnb-{s.message_kind}" style="color:{color};white-space:pre-wrap">'
                                  f"{prefix}{html.escape(s.message)}</div>")

    def _on_layout(self, change=None) -> None:
        self._y_row.layout.display = "" if self.state.ndim == 2 else "none"
        self.controls["address"].layout.display = "" if self.state.cluster == "address" else "none"

    def _on_scheme(self, change=None) -> None:
        """Disable the normalization, biasbn and seed controls where the scheme does not read them, saying why
        (`ignored_controls`)."""
        ignored = ignored_controls(self.state.scheme)
        for name, control in (("norm", "norm"), ("ignore", "ignore_biasbn"), ("seed", "seed")):
            self.controls[control].disabled = name in ignored
            self.controls[control].tooltip = ignored.get(name)

    def _export(self, kind: str) -> None:
        try:
            if kind == "html":
                self.state.export_html(figure=self._computed_figure())
            else:
                self.state.export_image(figure=self._computed_figure())
        except LandscapeError as exc:
            self.state._fail(exc)
        except Exception as exc:  # a readable line in the panel, the traceback in last_error
            logger.debug("export failed", exc_info=exc)
            self.state._fail(exc)

    def _computed_figure(self):
        """The live figure once it shows a computation (None before: exporting then says to press Compute)."""
        return self.figure if self.state.surface is not None else None

    # the state's verbs, for convenience

    def compute(self, wait: bool = False) -> bool:
        """Press Compute (``wait=True`` blocks until done)."""
        return self.state.compute(wait=wait)

    def cancel(self) -> bool:
        return self.state.cancel()

    def wait(self, timeout: float | None = None) -> Surface | None:
        return self.state.wait(timeout)

    def spec(self) -> ExplorerSpec:
        return self.state.spec()

    @property
    def surface(self) -> Surface | None:
        return self.state.surface

    @property
    def directions(self):
        """The `landscape_nb.directions.Directions` of the surface shown (None before a run's first values):
        ``lnb.compute_surface(explorer.centre, data, explorer.directions, x=(-1, 1, 401), y=...)`` computes
        the same plane at a resolution or range the panel does not offer."""
        return self.state.directions

    @property
    def centre(self):
        """The model at the centre (x = y = 0) of the surface shown: the picked model, or for an interpolation
        between minimizers the first of them; for a model of your own a copy of it as the run had it (training
        it on since changes neither this nor the surface shown); None before a run's first values."""
        return self.state.centre

    def export_html(self, path: str | None = None) -> Path:
        return self.state.export_html(path, figure=self._computed_figure())

    def export_image(self, path: str | None = None) -> Path:
        return self.state.export_image(path, figure=self._computed_figure())

    def close(self) -> None:
        state = getattr(self, "state", None)  # None where __init__ refused a control; ipywidgets still closes it
        if state is not None:
            state.close()
        watch = getattr(self, "_figure_watch", None)
        if watch is not None:
            watch.close()
        super().close()


def _odd(n):
    """A points slider's value as the state takes it: an even number typed into its readout (the browser keeps
    it within bounds but not on the step) moves up to the next odd one (down at the top end)."""
    if isinstance(n, int) and not n % 2 and POINTS[0] <= n <= POINTS[1]:
        return n + 1 if n < POINTS[1] else n - 1
    return n


class _ControlLink:
    """A two-way link of the state's trait ``name`` and its control's ``value``, as ``traitlets.link``, except
    that a value the state refuses is said on the message line and the control shows the state's value again:
    the refusal reached only the kernel's log, and the control kept showing a value that was not used (an
    even "points" typed into a slider's readout read 20 while 21 were computed). ``adjust`` maps a control's
    value first (`_odd`). ``unlink``/``link`` pause and resume it (``link`` puts the state's value back)."""

    def __init__(self, state, name: str, widget, adjust=None):
        self.state, self.name, self.widget, self.adjust = state, name, widget, adjust
        self.busy, self.linked = False, True
        widget.value = getattr(state, name)
        state.observe(self._to_widget, name)
        widget.observe(self._to_state, "value")

    def _to_widget(self, change) -> None:
        if self.linked and not self.busy:
            self.busy = True
            try:
                self.widget.value = change["new"]
            finally:
                self.busy = False

    def _to_state(self, change) -> None:
        if not self.linked or self.busy:
            return
        self.busy = True
        try:
            value = change["new"] if self.adjust is None else self.adjust(change["new"])
            try:
                setattr(self.state, self.name, value)
            except (t.TraitError, LandscapeError) as exc:
                self.state._say(str(exc), "error")
            if self.widget.value != getattr(self.state, self.name):
                self.widget.value = getattr(self.state, self.name)
        finally:
            self.busy = False

    def unlink(self) -> None:
        self.linked = False

    def link(self) -> None:
        self.linked = True
        self._to_widget({"new": getattr(self.state, self.name)})


def _in_panel_words(fig) -> None:
    """A line's capped loss axis note in the panel's words: it said "clip=False shows every value", an argument the
    panel has no control for (trial s58); the hover shows each value."""
    from ..plot.figures import CAP_NOTE, CLIP_OFF

    for note in fig.layout.annotations or ():
        if note.name == CAP_NOTE and f"({CLIP_OFF} shows every value" in (note.text or ""):
            note.text = note.text.replace(f"({CLIP_OFF} shows every value", "(the hover shows each value")


def _drawn_empty(fig, surf: Surface) -> bool:
    """Whether ``fig`` shows the empty grid of ``surf`` (a 2D live figure with no values yet, on the same grid) and
    ``surf`` holds no value either: a Compute's empty surface, drawn with its first tile instead. Retitled at
    the press as the run (the preview says nothing computed yet), the relayout held up the first values in the
    browser: Compute to first painted values 0.90-1.08 s against 0.63 s for mlp-digits (software WebGL in
    Chromium, a 2-core box, ``benchmarks/bench_first_paint.py``)."""
    from ..plot.live import live_info

    info = live_info(fig) or {}
    if surf.ndim != 2 or info.get("ndim") != 2 or not info.get("placeholder") or surf.n_done:
        return False
    extent = [float(surf.x.min()), float(surf.x.max()), float(surf.y.min()), float(surf.y.max())]
    return info.get("extent") == extent and (len(fig.data[0].x), len(fig.data[0].y)) == (len(surf.x), len(surf.y))


def _nothing_yet(model: str | None) -> str:
    """The title of an empty grid before any run (a preview, a refused first run): no run to describe. The model's
    name is shown as written (a title is Plotly markup)."""
    return f"{as_written(model or '')}: nothing computed yet"


def _shape(fig) -> tuple:
    """What a figure's traces are and where they are drawn: two live figures of one shape differ only in values."""
    return tuple((tr.type, getattr(tr, "scene", None), getattr(tr, "xaxis", None), getattr(tr, "yaxis", None))
                 for tr in fig.data)


def _sync_widget_state(fig) -> None:
    """Make the figure widget's synced state hold its current data and layout.

    A ``FigureWidget`` sends changes as messages applied by its browser-side model; its
    synced ``_widget_data``/``_widget_layout`` keep the values it was made with. A page whose
    model was not ready for those messages (Voilà restores widget models after running the
    notebook and loads plotly.js, ~5 MB, per figure) would draw those stale values; plotly
    refreshes them the same way when a figure is displayed (``_repr_mimebundle_``). The
    browser-side handlers of these two properties do nothing, so a drawn figure is unaffected.
    """
    fig._widget_layout = deepcopy(fig._layout_obj._props)
    fig._widget_data = deepcopy(fig._data)


def _scheme_options(schemes) -> list[tuple[str, str]]:
    """The directions menu's (label, scheme) options for ``schemes``."""
    return [(SCHEME_LABELS.get(s, s), s) for s in schemes]

