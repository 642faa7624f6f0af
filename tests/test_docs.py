"""The documentation site builds with warnings as errors and covers the README, the public
API and the notebooks."""
import html
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

for _module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "mkdocs_jupyter"):
    pytest.importorskip(_module)

import landscape_nb as lnb

REPO = Path(lnb.__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"),
         "--site-dir", str(out)],
        cwd=tmp_path_factory.mktemp("cwd"), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return out


def text_of(path: Path) -> str:
    """The page's text: tags removed, entities decoded, runs of whitespace as one space."""
    return squash(html.unescape(re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8"))))


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def test_guide_page_holds_every_readme_section(site):
    page = text_of(site / "index.html")
    headings = re.findall(r"^#{2,3} (.+)$", (REPO / "README.md").read_text(encoding="utf-8"), flags=re.M)
    assert len(headings) >= 5
    for h in headings:
        assert squash(re.sub(r"[`*]", "", h)) in page, h


def test_api_reference_documents_every_public_name(site):
    anchors = set()
    for page in (site / "api").rglob("index.html"):
        anchors |= set(re.findall(r'id="(landscape_nb\.[A-Za-z0-9_.]+)"', page.read_text(encoding="utf-8")))
    documented = {a.rsplit(".", 1)[-1] for a in anchors}
    missing = sorted(set(lnb.__all__) - documented)
    assert not missing, f"public names without an API entry (add them to docs/api/*.md): {missing}"
    page = (site / "api" / "compute" / "index.html").read_text(encoding="utf-8")
    assert "Parameters" in text_of(site / "api" / "reference" / "index.html")  # numpydoc sections rendered
    assert "landscape_nb.compute.compute_surface" in page


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a class or function of a module
        return False


def test_a_page_that_says_its_names_are_lnb_names_lists_only_those():
    """docs/api/analysis.md says "All of these are available as lnb.<name>"; ModeCurve was not (trial s39)."""
    for page in (REPO / "docs" / "api").glob("*.md"):
        text = page.read_text(encoding="utf-8")
        if "available as `lnb.<name>`" in text:
            entries = re.findall(r"^::: (landscape_nb\.[\w.]+)", text, re.MULTILINE)  # a module's: its listed members
            listed = {name.rsplit(".", 1)[-1] for name in entries if not _is_module(name)} | set(
                re.findall(r"^ {8}- (\w+)$", text, re.MULTILINE))
            assert listed and not listed - set(lnb.__all__), (page.name, sorted(listed - set(lnb.__all__)))


def test_every_notebook_is_rendered_without_running_it(site):
    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
    assert notebooks
    for nb_path in notebooks:
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        page = site / "notebooks" / nb_path.stem / "index.html"
        assert page.is_file(), f"{nb_path.name} has no page"
        text = text_of(page)
        title = next(line for c in nb["cells"] if c["cell_type"] == "markdown"
                     for line in "".join(c["source"]).splitlines() if line.startswith("#"))
        assert squash(title.lstrip("#")) in text
        for cell in nb["cells"]:  # every code cell's first line is on the page (highlighted, so as text)
            if cell["cell_type"] == "code" and "".join(cell["source"]).strip():
                assert squash("".join(cell["source"]).strip().splitlines()[0]) in text, (nb_path.name, cell["source"])
        assert not any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")  # committed cleared
