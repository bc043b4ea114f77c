"""``conveyor`` on the command line: a thin layer over the library, which never imports it.

    conveyor run [OPTIONS] COMMAND [::: ARGS]... [:::: FILES]...

``python -m conveyor`` is the same. ``docs/cli.md`` has every option.
"""

from __future__ import annotations

import sys

from ._journal import JobLogFormatError
from ._options import BAD_USAGE, UsageError, parse_run, usage_error
from ._runner import RunCommand

_USAGE = """usage: conveyor run [OPTIONS] COMMAND [::: ARGS]... [:::: FILES]...

Run COMMAND once per input, in parallel, with GNU parallel's options and semantics.
`conveyor run --help` lists the options."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_USAGE)
        return 0 if argv else BAD_USAGE
    name, rest = argv[0], argv[1:]
    if name != "run":
        print(f"conveyor: unknown command {name!r} (expected: run)", file=sys.stderr)
        return BAD_USAGE
    try:
        options = parse_run(rest)
        command = RunCommand(options)
    except UsageError as exc:
        return usage_error(exc)
    except JobLogFormatError as exc:
        print(f"conveyor run: {exc}", file=sys.stderr)
        return BAD_USAGE
    return command.run()


__all__ = ["main"]
