"""Write outputs so that nothing half-written is ever left where a user looks.

Every writer builds its result in a temporary sibling of the final path (same file system,
so the final ``os.replace`` is atomic) and moves it into place only when everything
succeeded. An existing output is never replaced unless ``overwrite=True``, and an output
that is, contains or lies inside one of its inputs is refused (``refuse_output_overlap``).

Temporaries are named ``.<final name>.tmp-<host>-<pid>-<random>``: a run killed outright
(SIGKILL, power loss) leaves one behind, and the next run writing into the same folder
removes it once no process of that id lives on this host (``remove_stale_temporaries``);
a live run's temporary is never touched. SIGTERM and SIGHUP raise ``Terminated`` (a
``KeyboardInterrupt``) inside ``termination_signals_raise``, so they clean up as Ctrl-C does.
What is moved into place has the permissions a plain ``mkdir``/``open`` gives under the
current umask (``tempfile`` creates 0700/0600).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from nnunet_nerve.errors import NerveError

#: This host in temporary names (letters and digits only, so the name parses back).
HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
#: ``.<name>.tmp-<host>-<pid>-<random>`` (and ``.old-`` for an output being replaced).
TEMPORARY_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-")
#: The signals handled as Ctrl-C is.
TERMINATION_SIGNALS = tuple(getattr(signal, s) for s in ("SIGTERM", "SIGHUP") if hasattr(signal, s))


#: What a file-system error means for the path it names, by exception type (errno's own text otherwise).
_OS_ERROR_MEANINGS = (
    (PermissionError, "permission denied (check the owner and mode of this path and of the folders above it)"),
    (NotADirectoryError, "a part of this path is a file, not a folder"),
    (FileExistsError, "exists and is not a folder"),
    (IsADirectoryError, "is a folder, not a file"),
)


def file_system_error(error: OSError) -> "NerveError | None":
    """The NerveError for an OSError that names its path (a read-only or unreadable folder, a
    folder that is a file): ``<path>: <what it means>``; None when the error names no path
    (then it is no user input problem and stays a traceback)."""
    if not getattr(error, "filename", None):
        return None
    meaning = next((text for kind, text in _OS_ERROR_MEANINGS if isinstance(error, kind)),
                   error.strerror or str(error))
    path = Path(os.fsdecode(error.filename))
    temporary = TEMPORARY_NAME.match(path.name)
    if temporary:  # our hidden temporary: the user knows the folder and the output's name
        return NerveError(f"{path.parent}: {meaning}; cannot write {temporary.group('name')} there")
    where = f"{path} -> {error.filename2}" if getattr(error, "filename2", None) else str(path)
    return NerveError(f"{where}: {meaning}")


def refuse_existing(path: Path, overwrite: bool, what: str = "output") -> None:
    """Raise NerveError if ``path`` exists and ``overwrite`` is False."""
    if Path(path).exists() and not overwrite:
        raise NerveError(f"{path}: {what} already exists; pass --overwrite to replace it")


def refuse_output_overlap(out: "str | os.PathLike", inputs: dict) -> None:
    """NerveError when the output ``out`` is, contains or lies inside one of ``inputs``
    ({what: path or None}), symlinks resolved: an output must never replace or be written
    into an input, with or without --overwrite."""
    out_r = Path(out).expanduser().resolve()
    for what, path in inputs.items():
        if path is None:
            continue
        p = Path(path).expanduser().resolve()
        if out_r == p or p in out_r.parents or out_r in p.parents:
            relation = "is" if out_r == p else ("lies inside" if p in out_r.parents else "contains")
            raise NerveError(f"{out}: the output {relation} the {what} ({path}); choose another output")


# --- signals ------------------------------------------------------------------------------

class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP received; handled like Ctrl-C, exit status ``128 + signum``."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def termination_signals_raise() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise ``Terminated`` in this process (the main
    thread), so that every ``atomic_*`` block removes its temporary as on Ctrl-C. A process
    forked inside the block (a worker) gets the default action back: it simply dies."""
    if not TERMINATION_SIGNALS or not _in_main_thread():
        yield
        return
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated(signum)

    previous = {s: signal.signal(s, handler) for s in TERMINATION_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C/SIGTERM/SIGHUP back while an output is being renamed into place, so that
    an interruption never falls between moving the old output aside and the new one in."""
    deferred = {signal.SIGINT, *TERMINATION_SIGNALS}
    if not hasattr(signal, "pthread_sigmask") or not _in_main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, deferred)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# --- stale temporaries --------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one we may not signal counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


def remove_stale_temporaries(folder: "str | os.PathLike") -> list:
    """Remove from ``folder`` the temporaries (``TEMPORARY_NAME``) that a run on this host
    left when it was killed: those whose process is gone. A ``.old-`` copy of a replaced
    output is removed only when the output itself is in place. Returns the removed paths."""
    folder = Path(folder)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = TEMPORARY_NAME.match(entry.name)
        if not m or m["host"] != HOST or _pid_alive(int(m["pid"])):
            continue
        if m["kind"] == "old" and not (folder / m["name"]).exists():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        removed.append(entry)
    return removed


# --- permissions --------------------------------------------------------------------------

def current_umask() -> int:
    """The process's umask (read from /proc where it can be, so it is never changed)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _honour_umask(path: Path, directory: bool) -> None:
    """Give ``path`` the mode a plain mkdir (0777) or open (0666) would under the umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


# --- atomic writers -----------------------------------------------------------------------

def _temporary_prefix(final: Path, kind: str = "tmp") -> str:
    return f".{final.name}.{kind}-{HOST}-{os.getpid()}-"


def refuse_replacing_the_working_directory(final: Path, what: str = "output folder") -> None:
    """NerveError when replacing ``final`` would delete the current folder or a folder above
    it (``phantom . --overwrite``, ``demo .. --overwrite``) or the file system's root."""
    if not final.exists() and not final.is_symlink():
        return
    target, cwd = final.resolve(), Path.cwd().resolve()
    if not final.name or target == cwd or target in cwd.parents:
        raise NerveError(f"{final}: the {what} is the current folder or contains it ({cwd}); refusing to "
                         "replace it, even with --overwrite: choose a new folder or run from elsewhere")


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, overwrite: bool = False, what: str = "output folder") -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it replaces ``final``.

    On any exception (Ctrl-C and, under ``termination_signals_raise``, SIGTERM/SIGHUP
    included) the temporary folder is removed and ``final`` is left untouched.
    """
    final = Path(os.path.abspath(final))  # "." and ".." by name (symbolic links are kept as links)
    refuse_existing(final, overwrite, what)
    refuse_replacing_the_working_directory(final, what)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final.parent)
    tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(final), dir=final.parent))
    old = None
    try:
        _honour_umask(tmp, directory=True)
        yield tmp
        with _signals_deferred():
            if final.exists():
                old = Path(tempfile.mkdtemp(prefix=_temporary_prefix(final, "old"), dir=final.parent))
                os.replace(final, old / final.name)
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not final.exists() and (old / final.name).exists():
            os.replace(old / final.name, final)
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary file path next to ``final``; on success it is renamed to ``final``.

    The temporary name keeps ``final``'s suffixes so that writers that pick a format from
    the file name (SimpleITK, matplotlib) still work.
    """
    final = Path(final)
    refuse_existing(final, overwrite, "file")
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final.parent)
    suffix = "".join(final.suffixes)
    fd, name = tempfile.mkstemp(prefix=_temporary_prefix(final), suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        _honour_umask(tmp, directory=False)
        yield tmp
        _honour_umask(tmp, directory=False)
        with _signals_deferred():
            os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
