"""Where the console scripts of this environment are (nnUNetv2_*, nnunet-nerve)."""
from __future__ import annotations

import sys
from pathlib import Path


def console_script(name: str) -> str:
    """The path of console script ``name`` installed next to this interpreter (a venv's bin/),
    so that subprocesses run the same installation; the bare name (looked up on PATH) when
    there is none."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name
