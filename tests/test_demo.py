"""The main job, end to end on the embedded cluster (small resolution)."""
import re

import pytest

from landscape_nb.cli import main


@pytest.mark.timeout(1500)  # the whole main job, training every model it shows on first use (~3 min on 2 cores)
def test_demo_writes_standalone_html_figures(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--resolution", "5", "--workers", "2"]) == 0
    pages = sorted(p.name for p in out.glob("*.html"))
    assert pages == sorted([
        "resnet20-digits-surface.html", "resnet20-noskip-digits-surface.html", "resnet20-skip-vs-noskip.html", "depth-skip-vs-noskip.html",
        "mlp-digits-small-vs-large-batch.html", "mlp-digits-flat-vs-sharp.html", "mlp-moons-contour.html"])
    for page in out.glob("*.html"):
        text = page.read_text()
        assert "Plotly.newPlot" in text and len(text) > 3_000_000  # plotly.js embedded
        assert not re.search(r"<script[^>]+src=[\"']https?://", text)
    stdout = capsys.readouterr().out
    assert "Dask dashboard: http://127.0.0.1:" in stdout and "7 figures" in stdout
    # the stores are complete and a rerun resumes them without recomputation
    assert main(["demo", "--out", str(out), "--resolution", "5", "--workers", "2"]) == 0
