"""The documentation's Python snippets run, from a folder that is not the checkout.

Every ```` ```python ```` fence of README.md and of each docs/guide page is run, the
fences of one page in order in one fresh interpreter (a page's snippets build on each
other), with a temporary folder as the working directory, so a snippet that reads
``data/...`` relative to the checkout fails. A fence may opt out with the line
``<!-- snippet: skip (reason) -->`` right before it (a cluster, LAMMPS, a model file the
reader brings); the reason is required. The README's links into docs/ must resolve.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
SKIP = re.compile(r"<!--\s*snippet:\s*skip\s*\((?P<why>[^)]+)\)\s*-->\s*$")
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs" / "guide").glob("*.md"))


def snippets(path: Path) -> tuple[list[str], list[str]]:
    """(code of the fences that run, reasons of the skipped ones), in page order."""
    text = path.read_text(encoding="utf-8")
    run, skipped = [], []
    for m in FENCE.finditer(text):
        before = text[:m.start()].rstrip().splitlines()
        marker = SKIP.search(before[-1]) if before else None
        (skipped if marker else run).append(marker.group("why") if marker else m.group(1))
    return run, skipped


def test_snippet_parser(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("a\n```python\nx = 1\n```\n<!-- snippet: skip (needs a cluster) -->\n"
                    "```python\ny = 2\n```\n```bash\nls\n```\n")
    assert snippets(page) == (["x = 1\n"], ["needs a cluster"])


RUNNABLE = [p for p in PAGES if snippets(p)[0]]


@pytest.mark.parametrize("page", RUNNABLE, ids=[p.relative_to(ROOT).as_posix() for p in RUNNABLE])
def test_page_snippets_run_from_any_folder(page, tmp_path):
    code, _ = snippets(page)
    script = tmp_path / "snippets.py"
    script.write_text("\n\n".join(code), encoding="utf-8")
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               GAPKIT_PROGRESS="0")
    env.pop("GAPKIT_DATA", None)
    res = subprocess.run([sys.executable, "-W", "error::UserWarning", str(script)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{page.name} snippets failed:\n{res.stderr[-3000:]}"
    assert "rank deficient" not in res.stderr


def test_readme_runs_the_five_line_example_and_keeps_the_test_command():
    code, skipped = snippets(ROOT / "README.md")
    assert code and not skipped
    assert any("default_data_dir()" in c and "e0=" in c for c in code)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    # .ci/run runs the README's test command; it must be the last command there
    assert re.search(r"^pytest -q\s+# run the tests$", text, re.M)
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == "pytest -q"


def test_readme_links_into_the_docs_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(((?:docs/|ARCHITECTURE)[^)#\s]*)(?:#([^)\s]+))?\)", text)
    assert len(links) >= 10
    for target, anchor in links:
        path = ROOT / target
        assert path.is_file(), f"README links to missing {target}"
        if anchor:
            slugs = {_slug(h) for h in re.findall(r"^#{1,3} (.+)$", path.read_text(encoding="utf-8"), re.M)}
            assert anchor in slugs, f"README links to missing heading #{anchor} of {target}"


def _slug(heading: str) -> str:
    """GitHub's (and MyST's ``myst_heading_anchors``) anchor of a heading."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")
