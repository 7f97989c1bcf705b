"""What every command-line entry point shares: environment faults end in one line that says what to
fix, not a traceback wall, and an exclusive lock keeps two runs from writing one folder.

Faults named here (disk full, quota, permissions, read-only file system, file-size limit) are not
bugs of the harness; anything else still raises with its traceback. SPO_TRACEBACK=1 shows it anyway.
"""
from __future__ import annotations

import errno
import fcntl
import os
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

ENVIRONMENT_FAULTS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up", errno.EFBIG: "a file-size limit was hit",
                      errno.EACCES: "permission denied", errno.EPERM: "operation not permitted", errno.EROFS: "the file system is read-only"}


def run_main(main: Callable[[], object], resume_hint: str = "") -> None:
    """Call `main`; a disk, permission or interrupt fault exits with a one-line message (status 1, or 130 on Ctrl-C)."""
    try:
        main()
    except KeyboardInterrupt:
        print(f"\ninterrupted{'; ' + resume_hint if resume_hint else ''}", file=sys.stderr)
        sys.exit(130)
    except OSError as e:
        if e.errno not in ENVIRONMENT_FAULTS or os.environ.get("SPO_TRACEBACK"):
            raise
        where = f" on {e.filename}" if e.filename else ""
        print(f"error: {ENVIRONMENT_FAULTS[e.errno]}{where} ({e.strerror}). Free space or fix permissions, or choose another "
              f"output folder; files written before are intact{'; ' + resume_hint if resume_hint else ''}.", file=sys.stderr)
        sys.exit(1)


@contextmanager
def exclusive(*folders: Path, by: str):
    """Hold `<folder>/.lock` (flock) of each folder for the block, on behalf of command `by`. If another
    process holds one, exit with a message naming that process. The lock goes with its process, so a
    killed run never leaves a stale one."""
    fds: list[int] = []
    try:
        for folder in dict.fromkeys(f.resolve() for f in folders):  # the same folder twice is locked once
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                raise SystemExit(f"{by}: {folder} is in use by {holder}; wait for it to finish, or choose another folder") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{by} (pid {os.getpid()})".encode(), 0)
        yield
    finally:
        for fd in fds:
            os.close(fd)
