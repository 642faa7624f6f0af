"""The Explorer in a real JupyterLab: Compute → first painted values, first and second Compute.

    [LNB_BENCH_MODEL=resnet20-digits] [LNB_BENCH_PAGES=4] PYTHONPATH=tests \
        python -m pytest benchmarks/bench_first_paint.py -p conftest -s -p no:cacheprovider

For each of ``LNB_BENCH_PAGES`` fresh pages on one JupyterLab (headless Debian Chromium, software WebGL,
the kernel's default threads): open ``notebooks/explore.ipynb``, run all cells, pick the model in
the first Explorer, wait 4 s (the range is searched ahead), press Compute and time until the 3D
surface shows its first values and all of them; then the same for a second Compute. Prints one
row per page and the medians. Uses the browser test's JupyterLab fixture (``tests/test_browser.py``)
and the test extra; a benchmark, never part of the suite. A zoo model is trained on first use.
"""
from __future__ import annotations

import os
import statistics

import pytest
import test_browser
from test_browser import CHROMIUM, CHROMIUM_ARGS, lab, run_all, timed_compute  # noqa: F401 - lab is a fixture

_kernel_env = test_browser.kernel_env
# the kernel as a user gets it: torch's default threads (the browser test pins 1)
test_browser.kernel_env = lambda cache: {k: v for k, v in _kernel_env(cache).items() if k != "OMP_NUM_THREADS"}


def compute(page, panel, timeout_ms: int) -> tuple[float, float]:
    """Seconds from the click to the first painted values and to all of them."""
    # plotly.js's copy of the last run's values (the same directions give the same values): forgotten,
    # so the count sees only what this Compute sends
    page.evaluate("() => { const gd = document.querySelector('.lnb-explorer .js-plotly-plot');"
                  " if (gd && gd.data && gd.data[0]) gd.data[0].z = null; }")
    return timed_compute(page, panel, timeout_ms)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium")
def test_bench_first_paint(lab):  # noqa: F811 - the fixture imported above
    from playwright.sync_api import sync_playwright

    model = os.environ.get("LNB_BENCH_MODEL", "resnet20-digits")
    pages = int(os.environ.get("LNB_BENCH_PAGES", "4"))
    timeout_ms, rows = 120_000, []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        for _ in range(pages):
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            run_all(page, lab, timeout_ms)
            panel = page.locator(".lnb-explorer").first
            panel.locator("select").first.select_option(model)
            page.wait_for_timeout(4000)
            first = compute(page, panel, timeout_ms)
            page.wait_for_timeout(1000)
            rows.append(first + compute(page, panel, timeout_ms))
            context.close()
        browser.close()
    print(f"\n## Explorer in JupyterLab, {model} 21×21 in-process: seconds from Compute to painted values\n")
    print("| page | 1st Compute: first values | all | 2nd Compute: first values | all |\n|---|---|---|---|---|")
    for i, r in enumerate(rows):
        print(f"| {i} | {r[0]:.2f} | {r[1]:.2f} | {r[2]:.2f} | {r[3]:.2f} |")
    print("| median | " + " | ".join(f"{statistics.median(r[k] for r in rows):.2f}" for k in range(4)) + " |")
