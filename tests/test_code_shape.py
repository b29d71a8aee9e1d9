"""Two rules of how the code is written, checked on the source tree itself.

* No function or method in pipeline/, model/ or cli/ is longer than 100 lines (a long function is
  several concerns; split it).
* No Python or Markdown file points at a document outside the repository: a person who clones the
  project has only what is in it, so comments and docs point at docs/ or at code.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_FOLDERS = ("pipeline", "model", "cli")
MAX_LINES = 100
# Assembled from parts so that this file does not match itself.
OUTSIDE = re.compile("|".join([
    re.escape("DESIGN" + ".md"),
    "DESIGN" + r" *§",
    r"\bfacts" + "/",
    r"\bfacts" + r"( +\w+\.md)? *§",
    re.escape(".." + "/shared"),
]))
SKIP_DIRS = {".git", ".venv", ".ci-venv", "node_modules", "build", "dist"}


def repo_files(*suffixes: str) -> list[Path]:
    """Tracked and untracked-but-not-ignored files with these suffixes (git), else a filtered walk."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                             cwd=ROOT, capture_output=True, check=True).stdout.decode()
        paths = [ROOT / p for p in out.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        paths = [p for p in ROOT.rglob("*") if not SKIP_DIRS & set(p.relative_to(ROOT).parts)]
    return sorted(p for p in paths if p.suffix in suffixes and p.is_file())


def long_functions(path: Path, root: Path = ROOT) -> list[str]:
    """'file:line name() is N lines' for every function longer than MAX_LINES (def line to last line)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [f"{path.relative_to(root)}:{node.lineno} {node.name}() is {node.end_lineno - node.lineno + 1} lines"
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_LINES]


def test_no_function_is_longer_than_100_lines():
    files = [p for p in repo_files(".py") if p.relative_to(ROOT).parts[0] in CODE_FOLDERS]
    assert len(files) > 20, "the code folders were not found"
    too_long = [msg for p in files for msg in long_functions(p)]
    assert not too_long, "split these functions:\n" + "\n".join(too_long)


def test_long_function_check_counts_def_to_last_line(tmp_path):
    src = tmp_path / "x.py"
    body = "\n".join(f"    a{i} = {i}" for i in range(MAX_LINES - 1))
    src.write_text(f"def ok():\n{body}\n\n\ndef too_long():\n{body}\n    b = 0\n")
    assert long_functions(src, tmp_path) == [f"x.py:{MAX_LINES + 3} too_long() is {MAX_LINES + 1} lines"]


def test_nothing_points_outside_the_repository():
    files = repo_files(".py", ".md")
    assert any(p.name == "README.md" for p in files)
    hits = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
            for p in files
            for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
            if OUTSIDE.search(line)]
    assert not hits, "point these at docs/ or drop the reference:\n" + "\n".join(hits)


def test_outside_pattern_catches_the_known_forms():
    for text in ("see DESIGN" + ".md", "(DESIGN" + " §3)", "facts" + "/method.md §2", "(facts" + " §4.1)",
                 "facts" + " eval.md §2d", "../.." + "/" + "sha" + "red/x"):
        assert OUTSIDE.search(text), text
    for text in ("docs/method.md", "the facts of the matter", "design choices"):
        assert not OUTSIDE.search(text), text
