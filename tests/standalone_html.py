"""Checks that an exported HTML figure renders offline: plotly.js inline, data inline, no remote assets."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

_REMOTE = re.compile(r"^\s*(https?:)?//", re.I)


class _Assets(HTMLParser):
    """Every URL the page itself would fetch: script/img/iframe src, link href, CSS @import/url()."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_script = False
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "img", "iframe", "embed", "source") and a.get("src"):
            self.urls.append(a["src"])
        if tag == "link" and a.get("href"):
            self.urls.append(a["href"])
        self._in_script = tag == "script" and not a.get("src")
        self._in_style = tag == "style"
        if self._in_script:
            self.inline_scripts.append("")

    def handle_endtag(self, tag):
        self._in_script = self._in_script and tag != "script"
        self._in_style = self._in_style and tag != "style"

    def handle_data(self, data):
        if self._in_script:
            self.inline_scripts[-1] += data
        if self._in_style:
            self.urls += re.findall(r"url\(\s*['\"]?([^'\")]+)", data)
            self.urls += re.findall(r"@import\s+['\"]([^'\"]+)", data)


def figure_json(text: str) -> dict:
    """The ``data`` array and ``layout`` object plotly's writer passes to ``Plotly.newPlot(id, data, layout,
    config)``."""
    call = text.index("Plotly.newPlot(")
    start = text.index("[", call)
    decoder = json.JSONDecoder()
    data, end = decoder.raw_decode(text[start:])
    rest = text[start + end:]
    layout, _ = decoder.raw_decode(rest[rest.index("{"):])
    return {"data": data, "layout": layout}


def values(v) -> np.ndarray:
    """A trace array as floats (NaN for null), also from plotly's base64 ``{"dtype", "bdata"}`` form."""
    import base64

    if isinstance(v, dict) and "bdata" in v:
        arr = np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).astype(float)
        shape = v.get("shape")
        if isinstance(shape, str):  # plotly writes "3, 5"
            shape = tuple(int(n) for n in shape.split(","))
        return arr.reshape(shape) if shape is not None else arr
    return np.array(v if v is not None else [], dtype=float)  # None -> nan


def assert_standalone_html(path: Path, *, min_points: int) -> dict:
    """Assert ``path`` is a standalone Plotly page with at least ``min_points`` numbers in z/y data."""
    assert path.is_file(), f"no exported file at {path}"
    text = path.read_text(encoding="utf-8")
    parser = _Assets()
    parser.feed(text)
    remote = [u for u in parser.urls if _REMOTE.match(u)]
    assert not remote, f"the page fetches remote assets: {remote}"
    assert not [u for u in parser.urls if not u.startswith("data:")], f"external files: {parser.urls}"
    bundle = max(parser.inline_scripts, key=len)
    assert len(bundle) > 1_000_000 and "plotly.js v" in bundle[:2000], "plotly.js is not embedded"
    fig = figure_json(text)
    n_values = 0
    for trace in fig["data"]:
        key = "z" if "z" in trace else "y"
        n_values += int(np.isfinite(values(trace.get(key))).sum())
    assert n_values >= min_points, f"only {n_values} data values in the page; expected at least {min_points}"
    assert "NaN" not in json.dumps(fig["data"]), "NaN in the figure data (not valid JSON)"
    return fig
