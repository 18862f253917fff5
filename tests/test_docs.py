"""The documentation site builds with ``mkdocs build --strict``: a broken link or anchor, a page missing
from the navigation or an API reference to a module that no longer exists fails the build, and so CI.
Needs the ``docs`` extra (``pip install -e ".[docs]"``): skipped without it on a user's clone, FAILS in CI."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCS_PACKAGES = ("mkdocs", "material", "mkdocstrings_handlers.python")  # MkDocs, Material, mkdocstrings[python]


@pytest.mark.slow
def test_docs_build_strictly(tmp_path: Path) -> None:
    missing = [name for name in DOCS_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {', '.join(missing)} is not installed: CI installs the docs extra (\".[dev,docs]\")")
        pytest.skip(f"{', '.join(missing)} not installed (pip install -e \".[docs]\")")
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                           cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    problems = [line for line in built.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert built.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(problems or built.stderr.splitlines()[-20:])
    assert (tmp_path / "site" / "api" / "experiments" / "index.html").is_file()
