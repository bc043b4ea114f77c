"""``--results DIR``: each job's output in files, GNU parallel's layout.

``DIR/1/<value of source 1>/2/<value of source 2>/{stdout,stderr,seq}``, a ``/`` in a
value written as ``_``. Each file is written whole to a temporary name, then renamed, so a
crash never leaves a half-written result that looks complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import IO

from ._job import JobResult


def job_directory(root: str, arguments: tuple[str, ...]) -> str:
    parts = [root]
    for position, value in enumerate(arguments, 1):
        parts += [str(position), value.replace("/", "_") or "_"]
    return os.path.join(*parts)


def write_results(root: str, job: JobResult) -> None:
    directory = job_directory(root, job.arguments)
    os.makedirs(directory, exist_ok=True)
    _write(directory, "seq", None, f"{job.seq}\n".encode())
    _write(directory, "stdout", job.stdout, b"")
    _write(directory, "stderr", job.stderr, b"")


def _write(directory: str, name: str, source: IO[bytes] | None, data: bytes) -> None:
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
    with os.fdopen(fd, "wb") as target:
        if source is not None:
            source.seek(0)
            shutil.copyfileobj(source, target)
            source.seek(0)
        else:
            target.write(data)
    os.replace(temporary, os.path.join(directory, name))


__all__ = ["job_directory", "write_results"]
