"""``conveyor`` on the command line: a thin layer over the library, which never imports it.

    conveyor run [OPTIONS] COMMAND [::: ARGS]... [:::: FILES]...
    conveyor map [OPTIONS] module:function [FILES]...

``python -m conveyor`` is the same. ``docs/cli.md`` has every option.
"""

from __future__ import annotations

import sys

from ._journal import JobLogFormatError
from ._map import MapCommand
from ._options import BAD_USAGE, UsageError, parse_map, parse_run, usage_error
from ._runner import RunCommand

_USAGE = """usage: conveyor run [OPTIONS] COMMAND [::: ARGS]... [:::: FILES]...
       conveyor map [OPTIONS] module:function [FILES]...

run: COMMAND once per input, in parallel, with GNU parallel's options and semantics.
map: a Python function over JSON lines, in parallel; a JSON record out for each.
`conveyor run --help` and `conveyor map --help` list the options."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_USAGE)
        return 0 if argv else BAD_USAGE
    name, rest = argv[0], argv[1:]
    if name not in ("run", "map"):
        print(f"conveyor: unknown command {name!r} (expected: run or map)", file=sys.stderr)
        return BAD_USAGE
    command: RunCommand | MapCommand
    try:
        command = RunCommand(parse_run(rest)) if name == "run" else MapCommand(parse_map(rest))
    except UsageError as exc:
        return usage_error(exc)
    except JobLogFormatError as exc:
        print(f"conveyor run: {exc}", file=sys.stderr)
        return BAD_USAGE
    return command.run()


__all__ = ["main"]
