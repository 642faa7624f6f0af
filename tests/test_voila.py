"""notebooks/explore.ipynb served as an app by Voilà on 127.0.0.1, driven in Debian's Chromium.

Serve the notebook (random free port, a token), open the page, wait until every cell has run,
press Compute on the first Explorer and wait for the live 3D surface to fill. The browser
measures, from the click, when the first values and when all values reach plotly.js; the
test prints both for two Computes (a measurement, not a timed assertion: issue 12's "first
painted values within 1 s" is read from this output).
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from test_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    FILLED_JS,
    GIVEN_UP,
    GRID,
    ROOT,
    figure_watch_outcome,
    free_port,
)
from test_notebooks import KERNEL, kernel_env, write_kernelspec

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium is not installed at /usr/bin/chromium "
                       "(apt-get install chromium; .ci/run does this)"),
]
voila = pytest.importorskip("voila", reason="Voilà is in the test extra: pip install -e .[test]")

# Installed in the page: from a click on Compute, when the first and all z values of *this* run
# reach plotly.js (ms). A run's values are told apart from the last run's by comparing with the
# z data at the click (each Compute here uses another seed, so its values differ).
TIMER_JS = """(filled) => {
  const button = document.querySelector('.lnb-explorer .lnb-compute');
  const count = eval(filled);
  const zdata = () => {
    const gd = document.querySelector('.lnb-explorer .js-plotly-plot');
    return gd && gd.data && gd.data.length && gd.data[0].z ? JSON.stringify(gd.data[0].z) : null;
  };
  window.__lnb = [];
  button.addEventListener('click', () => {
    const run = {t0: performance.now(), first: null, full: null};
    const before = zdata();
    window.__lnb.push(run);
    const tick = () => {
      try {  // a figure caught mid-redraw must not end the measurement
        const z = zdata(), n = count();
        if (z !== before && n > 0 && run.first === null) run.first = performance.now() - run.t0;
        if (z !== before && n >= %d) { run.full = performance.now() - run.t0; return; }
      } catch (e) { run.errors = (run.errors || 0) + 1; }
      setTimeout(tick, 5);
    };
    setTimeout(tick, 0);
  }, {capture: true});
}""" % (GRID * GRID)


# On a failure: what each figure in the page holds (a placeholder surface is all zeros at opacity 0).
PAGE_FIGURES_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => {
  const t = (gd.data || []).map(trace => ({visible: trace.visible, opacity: trace.opacity,
    values: trace.z ? trace.z.flat().filter(v => v !== null).length : null,
    nonzero: trace.z ? trace.z.flat().filter(v => v).length : null}));
  return {panel: Array.from(document.querySelectorAll('.lnb-explorer')).findIndex(p => p.contains(gd)),
          title: gd.layout && gd.layout.title && gd.layout.title.text, traces: t};
})"""

@pytest.fixture(scope="module")
def served(tmp_path_factory, shared_zoo_cache):
    """Voilà on 127.0.0.1 (random port, random token) serving a copy of explore.ipynb; always stopped."""
    home = tmp_path_factory.mktemp("voila")
    root = home / "root"
    root.mkdir()
    env = {**os.environ, **kernel_env(Path(shared_zoo_cache))}
    kernels = write_kernelspec(home / "share", kernel_env(Path(shared_zoo_cache)))
    nb = json.loads((ROOT / "notebooks" / "explore.ipynb").read_text())
    nb["metadata"]["kernelspec"] = {"name": KERNEL, "display_name": "landscape_nb test", "language": "python"}
    (root / "explore.ipynb").write_text(json.dumps(nb))
    env.update(JUPYTER_PATH=str(kernels.parent), JUPYTER_CONFIG_DIR=str(home / "config"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTER_DATA_DIR=str(home / "data"))
    port, token = free_port(), secrets.token_hex(16)
    server_log = open(home / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "voila", "explore.ipynb", "--no-browser", "--Voila.ip=127.0.0.1", f"--port={port}",
         f"--Voila.token={token}", "--Voila.port_retries=0", f"--Voila.root_dir={root}"],
        env=env, stdout=server_log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:  # any HTTP answer means the server is up (the page itself is rendered per visit)
                with urllib.request.urlopen(f"{base}/static/", timeout=2):
                    break
            except urllib.error.HTTPError:
                break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Voilà did not start:\n{(home / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"url": f"{base}/?token={token}", "base": base, "root": root, "log": home / "server.log"}
    finally:
        try:  # the server and the kernels it started: one process group
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except ProcessLookupError:
            pass
        server_log.close()


def test_voila_refuses_a_visitor_without_the_token(served):
    """Without the token a visitor gets a login page or a refusal, never the notebook (no kernel runs)."""
    try:
        with urllib.request.urlopen(f"{served['base']}/", timeout=30) as r:
            final, body = r.geturl(), r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        assert exc.code in (401, 403), exc
        return
    assert "/login" in final, final
    assert "lnb-explorer" not in body and "explore.ipynb" not in body


TIMEOUT_MS = 120_000


@contextmanager
def voila_page(served, failure_png: str, init_script: str | None = None):
    """A page of the served notebook in Chromium once every cell has run (the last cell's output, the second
    Explorer's export, is shown), and the browser console's errors and warnings; on a failure inside, a
    screenshot (``failure_png``), what each figure holds, the server's log and the console are kept."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        if init_script:
            context.add_init_script(init_script)
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda m: m.type in ("error", "warning") and console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        try:
            page.goto(served["url"], timeout=TIMEOUT_MS)
            page.get_by_text("xor-mlp-landscape.html").first.wait_for(timeout=TIMEOUT_MS)
            yield page, console
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            try:
                page.screenshot(path=str(ARTIFACTS / failure_png), timeout=15_000)
            finally:
                print("figures in the page:", page.evaluate(PAGE_FIGURES_JS))
                shown = [line for line in console if "version" not in line.lower()]  # not the shared modules' lines
                print(f"Voilà log tail:\n{served['log'].read_text()[-3000:]}\nbrowser console:\n" + "\n".join(shown[-30:]))
            raise
        finally:
            context.close()
            browser.close()


def test_explore_notebook_served_by_voila_fills_the_figure(served):
    timeout_ms = TIMEOUT_MS
    with voila_page(served, "voila-failure.png") as (page, console):
        assert "Traceback" not in page.inner_text("body")
        panel = page.locator(".lnb-explorer").first
        panel.locator(".lnb-compute").wait_for(timeout=timeout_ms)
        panel.locator(".js-plotly-plot").wait_for(timeout=timeout_ms)  # the (empty) figure is drawn
        assert page.evaluate(FILLED_JS) <= 0  # nothing computed in the first panel yet
        page.evaluate(TIMER_JS, f"({FILLED_JS})")
        page.evaluate("() => { window.__lnbGd = document.querySelector('.lnb-explorer .js-plotly-plot'); }")
        runs = []
        for attempt in range(2):  # the first Compute on a fresh page, then a second one (another seed)
            if attempt:
                seed = panel.locator(".lnb-seed input")
                seed.fill(str(attempt))
                seed.press("Enter")
                page.wait_for_timeout(300)  # the new seed reaches the kernel
            panel.locator(".lnb-compute").click()
            try:
                page.wait_for_function(f"() => window.__lnb.length > {attempt} && "
                                       f"window.__lnb[{attempt}].full !== null", timeout=timeout_ms, polling=100)
            except Exception:
                print("timer:", page.evaluate("() => window.__lnb"))
                print("panel:", panel.locator(".lnb-status").first.inner_text(), "|",
                      panel.locator(".lnb-message").first.inner_text())
                raise
            panel.locator(".lnb-status").get_by_text("done").wait_for(timeout=timeout_ms)
            runs.append(page.evaluate(f"() => window.__lnb[{attempt}]"))
        assert page.evaluate(FILLED_JS) == GRID * GRID
        print("figure:", figure_watch_outcome(page, panel, console, timeout_ms))
        message = panel.locator(".lnb-message").inner_text()
        assert "Done: 441 points" in message, message
        ARTIFACTS.mkdir(exist_ok=True)
        panel.screenshot(path=str(ARTIFACTS / "voila-explorer.png"))
    for i, run in enumerate(runs, 1):
        print(f"voila Compute {i}: first values in plotly.js {run['first'] / 1e3:.2f} s after the click, "
              f"all {GRID * GRID} {run['full'] / 1e3:.2f} s (load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


# Installed before the page's scripts: anywidget gives a widget 2 s (AbortSignal.timeout(2000)) to load its ESM
# and drops every later message to it when it has not (figure_watch). Here the models made while the flag is
# up time out at once, as a page too busy to load plotly.js within 2 s leaves them.
STARVE_JS = """(() => {
  const timeout = AbortSignal.timeout.bind(AbortSignal);
  window.__lnbStarve = true;
  window.__lnbStarved = 0;
  AbortSignal.timeout = (ms) => {
    if (window.__lnbStarve && ms === 2000 && String(new Error().stack).includes('anywidget')) {
      window.__lnbStarved += 1;
      return timeout(0);
    }
    return timeout(ms);
  };
})();"""


def test_a_figure_whose_page_dropped_its_updates_is_drawn_again_and_fills(served):
    """A figure widget the page gave up on while loading (anywidget's 2 s) shows a Compute's values all the same.

    Every anywidget model made during the page's load is starved, so both Explorers' figures drop the kernel's
    messages; they still draw, with the state they were made with. Without `figure_watch` the first Compute
    finished in the kernel while the figure kept saying "nothing computed yet" (the flake of sessions 47-49)."""
    with voila_page(served, "voila-starved-failure.png", init_script=STARVE_JS) as (page, console):
        panel = page.locator(".lnb-explorer").first
        panel.locator(".js-plotly-plot").wait_for(timeout=TIMEOUT_MS)
        assert page.evaluate("() => window.__lnbStarved") >= 2, "the figures' models were not starved"
        assert any(GIVEN_UP in line for line in console), console
        page.evaluate("() => { window.__lnbStarve = false; }")  # the widgets made from now on load as usual
        panel.locator(".lnb-compute").click()
        panel.locator(".lnb-status").get_by_text("done").wait_for(timeout=TIMEOUT_MS)
        page.wait_for_function(f"({FILLED_JS})() === {GRID * GRID}", timeout=60_000, polling=200)
        layout = page.evaluate("() => document.querySelector('.lnb-explorer .js-plotly-plot').layout")
        assert "nothing computed yet" not in layout["title"]["text"] and "mlp-digits" in layout["title"]["text"]
        # the starved widget's probe (its layout copied into the new widget), then the new widget's, applied
        page.wait_for_function("() => document.querySelector('.lnb-explorer .js-plotly-plot').layout.editrevision >= 2",
                               timeout=30_000)
        assert panel.locator(".js-plotly-plot").count() == 1  # the widget given up on is gone, not left beside
        assert "does not apply the figure" not in panel.inner_text()
