"""A live figure filling in, drawn by plotly.js in Chromium (software WebGL), measured in one run.

    python benchmarks/bench_live_figure.py [--n 21] [--chromium /usr/bin/chromium]

``plot.live`` of a bowl, its points arriving in a random order; after each update
(``Plotly.react`` with the figure of each tile) the page waits for three frames and a timer, so the
time includes WebGL's draw and the picking pass. Two versions of the same figure: contour
lines drawn on the 3D surface at every update (what landscape_nb did before), and as
``plot.live`` builds it now (on the surface only once it has no gaps).

Then the first values drawn into a figure shown empty, each on a fresh page (plotly.js's code
and WebGL programs cold, as at an Explorer's first Compute), repeated ``--repeats`` times in
turn: the empty figure's 3D surface hidden (before) or ``plot.live``'s transparent placeholder
(now). Needs Playwright and Debian's Chromium (the test extra and ``apt-get install chromium``).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import plotly

from landscape_nb import plot
from landscape_nb.surface import Surface

FILLED = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99, 1.0]
ARGS = ["--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader"]
UPDATE_JS = """async (figs) => {
  const gd = document.getElementById('gd');
  await Plotly.purge(gd);
  await Plotly.newPlot(gd, figs[0].data, figs[0].layout);
  const out = [];
  for (const f of figs.slice(1)) {
    const t = performance.now();
    await Plotly.react(gd, f.data, f.layout);  // the whole figure: one redraw
    for (let k = 0; k < 3; k++) await new Promise(r => requestAnimationFrame(r));
    await new Promise(r => setTimeout(r, 30));
    out.push(performance.now() - t);
  }
  return out;
}"""


FIRST_JS = """async ([empty, tile]) => {
  const gd = document.getElementById('gd');
  await Plotly.newPlot(gd, empty.data, empty.layout);
  for (let k = 0; k < 3; k++) await new Promise(r => requestAnimationFrame(r));
  await new Promise(r => setTimeout(r, 300));
  const t = performance.now();
  await Plotly.react(gd, tile.data, tile.layout);
  for (let k = 0; k < 3; k++) await new Promise(r => requestAnimationFrame(r));
  return performance.now() - t;
}"""


def hidden(fig: dict) -> dict:
    """An empty live figure as landscape_nb drew it before the placeholder: its 3D surface hidden."""
    surface = fig["data"][0]
    for key in ("opacity", "hoverinfo"):
        surface.pop(key, None)
    surface["visible"], surface["z"] = False, fig["data"][1]["z"]  # the contour's z: all null
    surface["contours"] = {a: {k: v for k, v in c.items() if k != "highlight"} for a, c in surface["contours"].items()}
    fig["layout"]["coloraxis"].pop("showscale", None)
    for a in "xyz":
        fig["layout"]["scene"][f"{a}axis"].pop("showspikes", None)
    return fig


def first_values(browser, page_uri: str, n: int, repeats: int) -> dict[str, list[float]]:
    """ms from the first tile's update to drawn, on a fresh page per sample: {variant: [ms, ...]}."""
    x = np.linspace(-1, 1, n)
    xx, yy = np.meshgrid(x, x)
    done = np.zeros((n, n), bool)
    done[n // 2 - 1:n // 2 + 2, n // 2 - 1:n // 2 + 2] = True  # one 3x3 tile
    loss = np.where(done, 2.3 + xx ** 2 + 2 * yy ** 2, np.nan)
    empty = figure_json(Surface(x=x, y=x, loss=np.full((n, n), np.nan), provenance={"scheme": "random", "label": "m"}),
                        False)
    tile = figure_json(Surface(x=x, y=x, loss=loss, done=done, provenance={"scheme": "random", "label": "m"}), False)
    variants = {"surface hidden (before)": hidden(json.loads(json.dumps(empty))), "placeholder (now)": empty}
    out: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for label, fig in variants.items():
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(page_uri)
            out[label].append(page.evaluate(FIRST_JS, [fig, tile]))
            page.close()
    return out


def surfaces(n: int, seed: int = 0) -> list[Surface]:
    x = np.linspace(-1, 1, n)
    xx, yy = np.meshgrid(x, x)
    loss = 0.1 + xx ** 2 + 2 * yy ** 2
    order = np.random.default_rng(seed).permutation(n * n)
    out = []
    for frac in [0.02] + FILLED:
        done = np.zeros((n, n), bool)
        done.flat[order[: round(frac * n * n)]] = True
        out.append(Surface(x=x, y=x, loss=np.where(done, loss, np.nan), done=done,
                           provenance={"scheme": "random", "label": "bowl"}))
    return out


def figure_json(surf: Surface, contours_always: bool) -> dict:
    fig = plot.live(surf, title="bowl").update_layout(width=1100)
    if contours_always:
        fig.data[0].contours.z.show = True
    return json.loads(json.dumps(fig.to_plotly_json(), cls=plotly.utils.PlotlyJSONEncoder))


def main() -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=21, help="points per axis")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--repeats", type=int, default=5, help="fresh pages per variant for the first values")
    args = ap.parse_args()
    js = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_text()
    page_file = Path(tempfile.mkdtemp()) / "live.html"
    page_file.write_text(f"<html><body><div id='gd' style='width:1100px;height:520px'></div>"
                         f"<script>{js}</script></body></html>")
    surfs = surfaces(args.n)
    rows = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(page_file.as_uri())
        for label, always in (("contours at every update (before)", True), ("plot.live (now)", False)):
            rows[label] = page.evaluate(UPDATE_JS, [figure_json(s, always) for s in surfs])
        first = first_values(browser, page_file.as_uri(), args.n, args.repeats)
        browser.close()
    header = ["filled"] + list(rows)
    from plotly.offline import get_plotlyjs_version

    print(f"\n## plotly.js {get_plotlyjs_version()} in Chromium, software WebGL: ms from an update (Plotly.react) "
          f"to drawn, {args.n}×{args.n} surface + contour\n")
    print("| " + " | ".join(header) + " | ratio |")
    print("|" + "---|" * (len(header) + 1))
    before, now = rows.values()
    for frac, a, b in zip(FILLED, before, now):
        print(f"| {frac:.0%} | {a:.0f} | {b:.0f} | {a / b:.1f}× |")
    print(f"| all updates | {sum(before):.0f} | {sum(now):.0f} | {sum(before) / sum(now):.1f}× |")

    print(f"\n## first values (one 3×3 tile) into an empty {args.n}×{args.n} live figure, fresh page each: "
          f"ms from the update to drawn, median of {args.repeats} (min–max)\n")
    print("| empty figure | ms | ratio |\n|---|---|---|")
    base = float(np.median(next(iter(first.values()))))
    for label, ms in first.items():
        print(f"| {label} | {np.median(ms):.0f} ({min(ms):.0f}–{max(ms):.0f}) | {base / np.median(ms):.2f}× |")


if __name__ == "__main__":
    main()
