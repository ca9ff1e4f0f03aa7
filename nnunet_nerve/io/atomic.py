"""Write outputs so that nothing half-written is ever left where a user looks.

Every writer builds its result in a temporary sibling of the final path (same file system,
so the final ``os.replace`` is atomic) and moves it into place only when everything
succeeded. An existing output is never replaced unless ``overwrite=True``.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from nnunet_nerve.errors import NerveError


def refuse_existing(path: Path, overwrite: bool, what: str = "output") -> None:
    """Raise NerveError if ``path`` exists and ``overwrite`` is False."""
    if Path(path).exists() and not overwrite:
        raise NerveError(f"{path}: {what} already exists; pass --overwrite to replace it")


def refuse_output_overlap(out: "str | os.PathLike", inputs: dict) -> None:
    """NerveError when the output ``out`` is, contains or lies inside one of ``inputs``
    ({what: path or None}): an output must never replace or be written into an input."""
    out_r = Path(out).expanduser().resolve()
    for what, path in inputs.items():
        if path is None:
            continue
        p = Path(path).expanduser().resolve()
        if out_r == p or p in out_r.parents or out_r in p.parents:
            relation = "is" if out_r == p else ("lies inside" if p in out_r.parents else "contains")
            raise NerveError(f"{out}: the output {relation} the {what} ({path}); choose another output")


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, overwrite: bool = False, what: str = "output folder") -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it replaces ``final``.

    On any exception the temporary folder is removed and ``final`` is left untouched.
    """
    final = Path(final)
    refuse_existing(final, overwrite, what)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary file path next to ``final``; on success it is renamed to ``final``.

    The temporary name keeps ``final``'s suffixes so that writers that pick a format from
    the file name (SimpleITK, matplotlib) still work.
    """
    final = Path(final)
    refuse_existing(final, overwrite, "file")
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
