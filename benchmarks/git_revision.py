"""A file of this repository as it was at a git revision, loaded as a module (for before / after benchmarks).

Only that file is old: what it imports is today's.
"""

from __future__ import annotations

import importlib.util
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def module_at(rev: str, relpath: str):
    """The module at ``relpath`` (from the repository root) as it was at ``rev``."""
    text = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{relpath}"],
                          check=True, capture_output=True, text=True).stdout
    name = f"_{Path(relpath).stem}_at_{rev}".replace("-", "_")
    path = Path(tempfile.mkdtemp()) / f"{name}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
