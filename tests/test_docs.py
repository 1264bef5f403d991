"""The README front page and the MkDocs documentation site (docs/, mkdocs.yml, scripts/docs_hooks.py)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

SETUP_COMMAND = "make setup"
TEST_COMMAND = "python -m pytest -q"


def _hooks():
    spec = importlib.util.spec_from_file_location("obliviate_docs_hooks", ROOT / "scripts" / "docs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _committed_result_pngs() -> list[str]:
    """The committed PNGs under benchmarks/results (git's list; the folder's files without git)."""
    try:
        out = subprocess.run(["git", "ls-files", "*.png"], cwd=ROOT, capture_output=True, text=True,
                             check=True, timeout=60).stdout.split()
    except (OSError, subprocess.SubprocessError):
        out = [p.relative_to(ROOT).as_posix() for p in (ROOT / "benchmarks" / "results").rglob("*.png")]
    return sorted(p for p in out if p.startswith("benchmarks/results/"))


# --- README as the front page ------------------------------------------------------------------

def test_readme_is_a_short_front_page_with_setup_demo_and_tests_first():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 260, f"README.md has {len(lines)} lines; move detail into docs/"
    head = "\n".join(lines[:80])
    for needle in (SETUP_COMMAND, TEST_COMMAND, "obliviate demo"):
        assert needle in head, f"{needle!r} is not in the first 80 lines of README.md"


def test_readme_test_command_is_the_one_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r'"\$VENV/bin/python" -m pytest -q\s*$', ci, flags=re.M), "CI no longer runs `python -m pytest -q`"
    assert "mkdocs build --strict" in ci
    # `make setup` is what CI runs too: scripts/setup.sh, which installs the docs extra
    assert re.search(r"^setup:\s*\n\s+bash scripts/setup\.sh", (ROOT / "Makefile").read_text(encoding="utf-8"), flags=re.M)
    assert "bash scripts/setup.sh" in ci
    assert "docs]" in (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")


def test_readme_relative_links_point_at_existing_files():
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [t for t in targets if not re.match(r"^[a-z]+:", t) and not t.startswith("#")]
    assert local, "the README links into the docs"
    missing = [t for t in local if not (ROOT / t.partition("#")[0]).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


# --- the docs hook -----------------------------------------------------------------------------

def test_published_files_cover_the_committed_results_and_configs():
    hooks = _hooks()
    published = hooks.published_files(ROOT)
    assert "configs/ulmr.yaml" in published
    for png in _committed_result_pngs():
        assert png in published, png
    assert all(not p.endswith("/") and (ROOT / p).is_file() for p in published)
    assert not any(p.startswith(("src/", "tests/", "docs/")) for p in published)


def test_rewrite_repo_links_points_published_files_at_their_site_copies(tmp_path):
    hooks = _hooks()
    docs = tmp_path / "docs"
    (docs / "results").mkdir(parents=True)
    published = frozenset({"benchmarks/results/run/plot.png", "benchmarks/results/run/report.md"})
    md = ("![plot](../../benchmarks/results/run/plot.png)\n"
          "[report](../../benchmarks/results/run/report.md#table \"the table\")\n"
          "[missing](../../benchmarks/results/run/nope.png)\n"
          "[source](../../src/obliviate/merge.py)\n"
          "[page](../guides/ulmr.md#merge) [web](https://example.org/a.png) [top](#plots)\n"
          "```\n[in code](../../benchmarks/results/run/plot.png)\n```\n")
    out = hooks.rewrite_repo_links(md, "results/page.md", docs, tmp_path, published)
    lines = out.splitlines()
    assert lines[0] == "![plot](../repo/benchmarks/results/run/plot.png)"
    assert lines[1] == '[report](../repo/benchmarks/results/run/report.md#table "the table")'
    # a missing or unpublished repository file stays as written, so the strict build reports it
    assert lines[2] == "[missing](../../benchmarks/results/run/nope.png)"
    assert lines[3] == "[source](../../src/obliviate/merge.py)"
    assert lines[4] == "[page](../guides/ulmr.md#merge) [web](https://example.org/a.png) [top](#plots)"
    assert lines[6] == "[in code](../../benchmarks/results/run/plot.png)"
    # from a page at the top of the docs
    top = hooks.rewrite_repo_links("[r](../benchmarks/results/run/plot.png)", "index.md", docs, tmp_path, published)
    assert top == "[r](repo/benchmarks/results/run/plot.png)"


def test_every_committed_result_png_is_shown_on_a_docs_page():
    pages = "\n".join(p.read_text(encoding="utf-8") for p in DOCS.rglob("*.md"))
    pngs = _committed_result_pngs()
    assert pngs, "benchmarks/results holds committed plots"
    for png in pngs:
        assert re.search(r"!\[[^\]]*\]\((\.\./)+" + re.escape(png) + r"\)", pages), \
            f"{png} is not shown (as an image) on any page under docs/"


# --- the strict build --------------------------------------------------------------------------

def test_mkdocs_strict_build_passes(tmp_path):
    for module in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python", "material"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    # the API reference was generated from the docstrings
    api = (site / "reference" / "merge" / "index.html").read_text(encoding="utf-8")
    assert "merge_models" in api
    # every committed result plot is in the site and shown by some page
    html = "\n".join(p.read_text(encoding="utf-8") for p in site.rglob("*.html"))
    for png in _committed_result_pngs():
        assert (site / "repo" / png).is_file(), png
        assert re.search(r'<img[^>]+src="[^"]*repo/' + re.escape(png) + '"', html), png
