"""Exports: standalone HTML, static images (kaleido + a browser) and legacy VTK files,
checked by reading the files back with naive readers written here."""
from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import landscape_nb as lnb
from landscape_nb import LandscapeError, Surface, plot
from landscape_nb.plot.export import export_html, export_image, export_vtk

X = np.linspace(-1.0, 1.0, 7)
Y = np.linspace(-0.5, 1.5, 5)  # non-square grid, different ranges


def bowl_value(x, y):
    return x**2 + 2 * y**2


@pytest.fixture
def bowl() -> Surface:
    loss = np.array([[bowl_value(x, y) for x in X] for y in Y])
    return Surface(x=X, y=Y, loss=loss, metrics={"accuracy": 1 - loss / 10})


def make_line(n=11) -> Surface:
    x = np.linspace(-0.5, 1.5, n)
    loss = (x * (x - 1)) ** 2 + 0.1
    return Surface(x=x, y=None, loss=loss, metrics={"accuracy": 1 - loss}, provenance={"label": "A→B"})


def with_loss(surf: Surface, loss: np.ndarray) -> Surface:
    return Surface(
        x=surf.x, y=surf.y, loss=loss, metrics=dict(surf.metrics), provenance=dict(surf.provenance)
    )


def _decode(value):
    """A Plotly JSON array: a list or {"dtype", "bdata", "shape"} (base64 typed array)."""
    if isinstance(value, dict) and "bdata" in value:
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = [int(s) for s in str(value.get("shape", arr.size)).split(",")]
        return arr.reshape(shape)
    return np.asarray(value, dtype=float)


def test_export_html_is_standalone_and_holds_the_data(tmp_path, bowl):
    fig = plot.contour(bowl, clip=False, title="standalone bowl")
    out = export_html(fig, tmp_path / "nested" / "dir" / "bowl.html")
    assert isinstance(out, Path) and out.exists()
    html = out.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html>") and "</html>" in html
    assert "plotly.js v" in html and len(html) > 1_000_000  # the bundle is embedded
    assert not re.search(r"<script[^>]*\ssrc\s*=\s*[\"']?(https?:)?//", html, re.I)
    assert "cdn.plot.ly/plotly" not in html.split("Plotly.newPlot")[1]
    assert "standalone bowl" in html
    call = html[html.index("Plotly.newPlot(") + len("Plotly.newPlot(") :]
    call = call[call.index(",") + 1 :].lstrip()  # skip the div id
    traces, _ = json.JSONDecoder().raw_decode(call)
    np.testing.assert_array_equal(_decode(traces[0]["z"]), bowl.loss)
    np.testing.assert_array_equal(_decode(traces[0]["x"]), X)


def test_an_exported_page_is_named_by_its_figures_title_as_shown(tmp_path, bowl):
    """An exported page had an empty <title> (trial s60): a browser's tab and history said nothing. It is the
    figure's title as the figure shows it (markup dropped, entities decoded, line breaks as spaces), escaped;
    the file's name where the figure has none."""
    from html.parser import HTMLParser

    class Title(HTMLParser):
        text, inside = "", False

        def handle_starttag(self, tag, attrs):
            self.inside = tag == "title"

        def handle_endtag(self, tag):
            self.inside = False

        def handle_data(self, data):
            self.text += data if self.inside else ""

    def title_of(path):
        parser = Title()
        parser.feed(path.read_text(encoding="utf-8").split("<body>")[0])
        return parser.text

    fig = plot.contour(bowl, clip=False, title="mine &lt;b&gt; &amp; co:<br><b>a</b> plane")
    assert title_of(export_html(fig, tmp_path / "a.html")) == "mine <b> & co: a plane"
    fig = plot.contour(bowl, clip=False, title='a < b > c, "d"')  # no tag between < and > (review s60)
    assert title_of(export_html(fig, tmp_path / "b.html")) == 'a < b > c, "d"'
    assert title_of(export_html(plot.contour(bowl, clip=False, title=""), tmp_path / "no title.html")) == "no title"


def test_an_exported_figure_keeps_the_provenance_of_what_it_was_computed_from(tmp_path):
    """s40: a figure written to HTML said nothing of the model, data, directions or versions behind it. The
    package's figures carry each surface's provenance in layout.meta, read back here from the file."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    data = (torch.randn(40, 4), torch.randint(0, 3, (40,)))
    d = lnb.random_directions(model, n=2, seed=7)
    surf = lnb.compute_surface(model, data, d, x=(-1, 1, 3), y=(-1, 1, 3))
    line = lnb.compute_surface(model, {"train": data, "test": data}, lnb.random_directions(model, n=1, seed=7),
                               x=(-1, 1, 3))
    def kept_in(fig):
        html = export_html(fig, tmp_path / "f.html").read_text(encoding="utf-8")
        call = html[html.index("Plotly.newPlot(") + len("Plotly.newPlot("):]
        call = call[call.index(",") + 1:].lstrip()
        decoder = json.JSONDecoder()
        _, end = decoder.raw_decode(call)  # the traces, then the layout
        layout, _ = decoder.raw_decode(call[end:].lstrip(", \n"))
        return layout["meta"]["provenance"]

    for fig, want in ((plot.contour(surf), [surf]), (plot.surface(surf), [surf]), (plot.compare([surf, surf]),
                      [surf, surf]), (plot.line_splits(line), [line])):
        kept = kept_in(fig)
        assert len(kept) == len(want)
        for got, s in zip(kept, want):
            assert got["directions"]["seed"] == 7 and got["key"] == s.provenance["key"]  # the spec's hash
            assert (got["torch"], got["landscape_nb"]) == (s.provenance["torch"], s.provenance["landscape_nb"])
    # a Hessian spectrum's names the model (its state's fingerprint, as a surface's spec), the loss and the settings
    spec = lnb.hessian_spectrum(model, data, n_probes=2, n_steps=8, seed=3)
    (got,) = kept_in(plot.spectrum(spec))
    assert got["model"] == {"class": "Sequential", "weights": surf.spec["model"]["weights"]}
    assert (got["n_probes"], got["n_steps"], got["seed"]) == (2, 8, 3) and "cross-entropy" in got["loss"]
    assert got["data"] == {"fingerprint": surf.spec["data"]["fingerprint"], "samples": 40}
    assert got["torch"] == torch.__version__
    if importlib.util.find_spec("gudhi") is not None:  # the topology extra: a persistence diagram keeps the
        (got,) = kept_in(plot.persistence(surf.topology()))  # surface's (its topology did not, s41)
        assert got["key"] == surf.provenance["key"]


def _browser_available() -> bool:
    import importlib.util

    if importlib.util.find_spec("kaleido") is None:
        return False
    if os.environ.get("BROWSER_PATH"):
        return True
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
    return any(shutil.which(n) for n in names)


needs_browser = pytest.mark.skipif(
    not _browser_available(),
    reason="kaleido or Chrome/Chromium missing: pip install 'kaleido>=1', install chromium, "
    "or set BROWSER_PATH",
)


@needs_browser
def test_export_image_writes_png_and_svg(tmp_path, bowl):
    fig = plot.contour(bowl)
    png = export_image(fig, tmp_path / "out" / "bowl.png", width=300, height=200)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = export_image(fig, tmp_path / "bowl.img", format="svg")
    assert b"<svg" in svg.read_bytes()[:200]


def test_export_image_explains_bad_format_and_missing_browser(tmp_path, bowl, monkeypatch):
    fig = plot.heatmap(bowl)
    with pytest.raises(LandscapeError, match="format 'bmp'.*expected one of"):
        export_image(fig, tmp_path / "bowl.bmp")
    # accepted before, with no word: SVG bytes in a .png file, a 700x500 image for width=-5 or scale=0 (trial s38)
    with pytest.raises(LandscapeError, match=r"format='svg' but the path .* ends in '\.png'; expected them to "
                                             r"agree: drop format= \(the suffix decides\) or name the file 'b\.svg'"):
        export_image(fig, tmp_path / "b.png", format="svg")
    for bad, words in (({"width": -5}, r"export_image width=-5; expected a positive integer or None"),
                       ({"height": 200.5}, r"export_image height=200\.5; expected a positive integer"),
                       ({"scale": 0}, r"export_image scale=0; expected a positive finite number")):
        with pytest.raises(LandscapeError, match=words):
            export_image(fig, tmp_path / "b.png", **bad)
    assert not list(tmp_path.glob("b.*"))
    pytest.importorskip("kaleido")
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-chromium"))
    with pytest.raises(LandscapeError, match="BROWSER_PATH=.*not an executable.*chromium"):
        export_image(fig, tmp_path / "bowl.png")
    assert not (tmp_path / "bowl.png").exists()


@pytest.mark.skipif(not Path("/bin/false").exists(), reason="needs /bin/false as a broken browser")
def test_export_image_wraps_a_browser_that_fails_to_start(tmp_path, bowl, monkeypatch):
    pytest.importorskip("kaleido")
    monkeypatch.setenv("BROWSER_PATH", "/bin/false")
    with pytest.raises(LandscapeError, match="install.*BROWSER_PATH"):
        export_image(plot.heatmap(bowl), tmp_path / "bowl.png")


def read_legacy_vtk(path):
    """A naive reader: DIMENSIONS, POINTS and every SCALARS array of an ASCII VTK file."""
    tokens = Path(path).read_text(encoding="ascii").split("\n")
    assert tokens[0] == "# vtk DataFile Version 3.0"
    assert tokens[2] == "ASCII" and tokens[3] == "DATASET STRUCTURED_GRID"
    words = " ".join(tokens[4:]).split()
    out, k = {"scalars": {}}, 0
    while k < len(words):
        w = words[k]
        if w == "DIMENSIONS":
            out["dims"] = tuple(int(v) for v in words[k + 1 : k + 4])
            k += 4
        elif w == "POINTS":
            n = int(words[k + 1])
            out["points"] = np.array(words[k + 3 : k + 3 + 3 * n], dtype=float).reshape(n, 3)
            k += 3 + 3 * n
        elif w == "POINT_DATA":
            out["n"] = int(words[k + 1])
            k += 2
        elif w == "SCALARS":
            name = words[k + 1]
            assert words[k + 4 : k + 6] == ["LOOKUP_TABLE", "default"]
            start = k + 6
            out["scalars"][name] = np.array(words[start : start + out["n"]], dtype=float)
            k = start + out["n"]
        else:
            raise AssertionError(f"unexpected token {w!r}")
    return out


def test_export_vtk_round_trips_points_and_scalars(tmp_path, bowl):
    path = export_vtk(bowl, tmp_path / "vtk" / "bowl.vtk")
    vtk = read_legacy_vtk(path)
    assert vtk["dims"] == (X.size, Y.size, 1)
    pts = vtk["points"]
    assert pts.shape == (X.size * Y.size, 3)
    for j in range(Y.size):
        for i in range(X.size):
            px, py, pz = pts[j * X.size + i]  # x varies fastest
            assert (px, py) == (X[i], Y[j])
            assert pz == bowl_value(X[i], Y[j])
    np.testing.assert_array_equal(vtk["scalars"]["loss"], bowl.loss.ravel())
    np.testing.assert_array_equal(vtk["scalars"]["accuracy"], bowl.metrics["accuracy"].ravel())
    assert (vtk["scalars"]["valid"] == 1).all()


def test_export_vtk_log_metric_and_missing_values(tmp_path, bowl):
    loss = bowl.loss.copy()
    loss[2, 3] = np.nan
    loss[4, 6] = np.inf
    with pytest.warns(UserWarning, match=r"3 of 35 points have no finite log10 of the loss \(diverged, ≤ 0 or not "
                                         r"computed\), 1 of them ≤ 0 and drawn at the lowest height; VTK files hold "
                                         r"no NaN"):
        vtk = read_legacy_vtk(export_vtk(with_loss(bowl, loss), tmp_path / "b.vtk", log=True))
    text = (tmp_path / "b.vtk").read_text()
    assert "nan" not in text and "inf" not in text
    valid = vtk["scalars"]["valid"].reshape(loss.shape).astype(bool)
    expected_bad = ~np.isfinite(loss) | (loss <= 0)
    np.testing.assert_array_equal(~valid, expected_bad)
    height = vtk["points"][:, 2].reshape(loss.shape)
    np.testing.assert_allclose(height[valid], np.log10(loss[valid]))
    # the nonfinite ones at the finite maximum; the minimum, a loss of exactly 0, was drawn there too (trial s38)
    assert (height[~np.isfinite(loss)] == height[valid].max()).all()
    assert loss[2, 3] != 0 and loss[Y == 0.0, X == 0.0] == 0 and height[Y == 0.0, X == 0.0] == height[valid].min()
    np.testing.assert_array_equal(vtk["scalars"]["height"], vtk["points"][:, 2])
    assert "accuracy_valid" not in vtk["scalars"]  # its values are there, where the loss is not

    vtk = read_legacy_vtk(export_vtk(bowl, tmp_path / "acc.vtk", name="accuracy", fill=-1.0))
    np.testing.assert_array_equal(vtk["points"][:, 2], bowl.metrics["accuracy"].ravel())
    with pytest.raises(LandscapeError, match="no quantity 'top5'"):
        export_vtk(bowl, tmp_path / "x.vtk", name="top5")


def test_export_vtk_masks_a_metric_missing_where_the_loss_is_finite_and_warns_of_every_gap(tmp_path, bowl):
    """A metric a run did not finish (a test split stopped early, an eigenvalue whose Lanczos run did not
    converge) was written as its largest finite value, 0.639 accuracy, with ``valid`` 1 there and no word; a
    partial surface's missing points made a plateau at the top with no word in Python (trial s38)."""
    metrics = {"accuracy": bowl.metrics["accuracy"].copy(), "test_loss": bowl.loss * 2}
    metrics["test_loss"][3:, :] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        export_vtk(bowl, tmp_path / "whole.vtk")  # nothing missing: nothing said
    surf = Surface(x=X, y=Y, loss=bowl.loss, metrics=metrics)
    with pytest.warns(UserWarning, match=r"these arrays also miss values where the height is finite: test_loss "
                                         r"\(14 more points, mask test_loss_valid\)"):
        vtk = read_legacy_vtk(export_vtk(surf, tmp_path / "m.vtk"))
    assert (vtk["scalars"]["valid"] == 1).all() and "accuracy_valid" not in vtk["scalars"]
    mask = vtk["scalars"]["test_loss_valid"].reshape(bowl.loss.shape)
    np.testing.assert_array_equal(mask, np.isfinite(metrics["test_loss"]))
    np.testing.assert_array_equal(vtk["scalars"]["test_loss"].reshape(mask.shape)[mask == 1],
                                  metrics["test_loss"][mask == 1])
    done = np.zeros(bowl.loss.shape, bool)
    done[:2] = True
    partial = Surface(x=X, y=Y, loss=np.where(done, bowl.loss, np.nan),
                      metrics={"accuracy": np.where(done, bowl.metrics["accuracy"], np.nan)}, done=done)
    with pytest.warns(UserWarning, match=r"21 of 35 points have no finite loss \(diverged or not computed\)"):
        vtk = read_legacy_vtk(export_vtk(partial, tmp_path / "p.vtk"))
    np.testing.assert_array_equal(vtk["scalars"]["valid"].reshape(done.shape), done)


def test_export_vtk_writes_1d_surfaces_as_a_grid_of_height_one(tmp_path):
    surf = make_line(n=9)
    vtk = read_legacy_vtk(export_vtk(surf, tmp_path / "line.vtk"))
    assert vtk["dims"] == (9, 1, 1)
    np.testing.assert_array_equal(vtk["points"][:, 0], surf.x)
    np.testing.assert_array_equal(vtk["points"][:, 1], 0.0)
    np.testing.assert_array_equal(vtk["points"][:, 2], surf.loss)


def test_export_vtk_quantity_keyword_is_a_deprecated_alias_of_name(tmp_path, bowl):
    new = export_vtk(bowl, tmp_path / "new.vtk", name="accuracy", log=True)
    with pytest.warns(DeprecationWarning, match="quantity= is deprecated; use name='accuracy'"):
        old = export_vtk(bowl, tmp_path / "old.vtk", quantity="accuracy", log=True)
    assert old.read_text() == new.read_text()
    positional = export_vtk(bowl, tmp_path / "pos.vtk", "accuracy", True)  # old positional order
    assert positional.read_text() == new.read_text()
    np.testing.assert_allclose(
        read_legacy_vtk(new)["points"][:, 2], np.log10(bowl.metrics["accuracy"]).ravel()
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(LandscapeError, match="name='top5' and quantity='accuracy'.*pass only name="):
            export_vtk(bowl, tmp_path / "x.vtk", name="top5", quantity="accuracy")
    assert not (tmp_path / "x.vtk").exists()


def test_exports_are_one_set_of_functions_under_plot_and_the_top_level():
    for name in ("export_html", "export_image", "export_vtk"):
        function = getattr(plot, name)
        assert function is getattr(lnb, name) is getattr(lnb.plot.export, name)
        assert name in plot.__all__


def test_export_vtk_refuses_a_suffix_paraview_reads_as_xml(tmp_path):
    import numpy as np

    from landscape_nb import LandscapeError, Surface
    from landscape_nb.plot.export import export_vtk

    surf = Surface(x=np.linspace(-1, 1, 3), y=np.linspace(-1, 1, 2), loss=np.ones((2, 3)))
    with pytest.raises(LandscapeError, match="expected '.vtk'"):
        export_vtk(surf, tmp_path / "s.vtp")
    assert not (tmp_path / "s.vtp").exists()
