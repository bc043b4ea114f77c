"""The command line: ``conveyor run [OPTIONS] COMMAND [::: ARGS | :::: FILES]...``.

Options come first; the command starts at the first word that is not one (so the
command's own options, ``echo -n``, are left to it); ``:::``, ``::::``, ``:::+`` and
``::::+`` start input sources. A bad option is a message on stderr and exit status 255,
GNU parallel's, and nothing runs.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Literal, NoReturn

from .._cpus import available_cpus
from ._halt import Halt, HaltSyntaxError
from ._sources import Source, read_file

BAD_USAGE = 255
MARKERS = (":::", "::::", ":::+", "::::+")


class UsageError(Exception):
    """Bad command line: the message is printed, the exit status is 255."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


@dataclass
class RunOptions:
    command: list[str]
    sources: list[Source]
    jobs: int
    keep_order: bool
    output: str  # "group" | "line-buffer" | "ungroup"
    tag: bool
    timeout: float | None
    retries: int
    halt: Halt | None
    joblog: str | None
    dry_run: bool
    bar: bool
    link: bool
    delimiter: str | None
    resume: str | None  # "resume" | "resume-failed" | "retry-failed"
    results: str | None


def run_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="conveyor run",
        description="Run a shell command for each input, in parallel (GNU parallel's way).",
    )
    add = parser.add_argument
    add("-j", "--jobs", default="100%", help="job slots: N, N%% of the CPUs, or 0 for one per CPU")
    add("-k", "--keep-order", action="store_true", help="print output in input order")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--group", dest="output", action="store_const", const="group")
    group.add_argument(
        "--line-buffer", "--lb", dest="output", action="store_const", const="line-buffer"
    )
    group.add_argument("-u", "--ungroup", dest="output", action="store_const", const="ungroup")
    add("--tag", action="store_true", help="prefix each output line with the job's arguments")
    add("--timeout", type=float, help="seconds a job may run before it is killed")
    add("--retries", type=int, default=0, help="run a failing job up to N more times")
    add("--halt", default="never", help="now|soon,fail|success|done=N|N%%")
    add("--joblog", help="GNU parallel's job log (+FILE appends, - is stdout)")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume",
        dest="resume",
        action="store_const",
        const="resume",
        help="skip the jobs the job log's journal has finished",
    )
    resume.add_argument(
        "--resume-failed",
        dest="resume",
        action="store_const",
        const="resume-failed",
        help="skip only the jobs that succeeded",
    )
    resume.add_argument(
        "--retry-failed",
        dest="resume",
        action="store_const",
        const="retry-failed",
        help="run again the logged jobs that failed",
    )
    add("--dry-run", action="store_true", help="print the commands, run nothing")
    add("--bar", action="store_true", help="a progress bar on stderr")
    add("--eta", dest="bar", action="store_true", help="the same bar, with its estimate")
    add("--results", help="each job's stdout, stderr and seq in files under this directory")
    add(
        "--link",
        "--xapply",
        action="store_true",
        help="zip the input sources, do not multiply them",
    )
    add("-0", "--null", action="store_true", help="records end with NUL, not newline")
    add("-d", "--delimiter", help="records end with this string")
    add("-a", "--arg-file", action="append", default=[], help="read input records from a file")
    add("command", nargs=argparse.REMAINDER, help="the command, then ::: values or :::: files")
    parser.set_defaults(output="group")
    return parser


@dataclass
class MapOptions:
    target: str
    files: list[str]
    jobs: int | None
    keep_order: bool
    timeout: float | None
    retries: int
    halt: Halt | None
    joblog: str | None
    resume: str | None
    backend: Literal["process", "thread", "dask"]
    scheduler: str | None
    spread: str | None  # None, "star" (a list as positional arguments), "kwargs"


def map_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="conveyor map",
        description="Run a Python function over JSON lines, in parallel; JSON lines out.",
    )
    add = parser.add_argument
    add("target", help="module:function (the module importable from here)")
    add("files", nargs="*", help="JSON-lines input files (default: stdin)")
    add("-j", "--jobs", help="workers: N, N%% of the CPUs (default: one per CPU)")
    add("-k", "--keep-order", action="store_true", help="records out in input order")
    add("--backend", choices=("process", "thread", "dask"), default="process")
    add("--scheduler", help="a Dask scheduler's address (with --backend dask)")
    spread = parser.add_mutually_exclusive_group()
    spread.add_argument(
        "--star",
        dest="spread",
        action="store_const",
        const="star",
        help="a list input is the function's positional arguments",
    )
    spread.add_argument(
        "--kwargs",
        dest="spread",
        action="store_const",
        const="kwargs",
        help="an object input is the function's keyword arguments",
    )
    add("--timeout", type=float, help="seconds a record may run before it fails")
    add("--retries", type=int, default=1, help="re-runs of a record whose worker died")
    add("--halt", default="never", help="now|soon,fail|success|done=N|N%%")
    add("--joblog", help="GNU parallel's job log (+FILE appends, - is stdout)")
    resume = parser.add_mutually_exclusive_group()
    for flag in ("resume", "resume-failed", "retry-failed"):
        resume.add_argument(f"--{flag}", dest="resume", action="store_const", const=flag)
    return parser


def parse_map(argv: list[str]) -> MapOptions:
    args = map_parser().parse_args(argv)
    if args.resume == "retry-failed":
        raise UsageError("conveyor map: --retry-failed is for run; use --resume-failed")
    if args.scheduler and args.backend != "dask":
        raise UsageError("conveyor map: --scheduler is for --backend dask")
    halt = _checked_common(args, "conveyor map")
    return MapOptions(
        target=args.target,
        files=args.files,
        jobs=_slots(args.jobs) if args.jobs else None,
        keep_order=args.keep_order,
        timeout=args.timeout,
        retries=args.retries,
        halt=halt,
        joblog=args.joblog,
        resume=args.resume,
        backend=args.backend,
        scheduler=args.scheduler,
        spread=args.spread,
    )


def parse_run(argv: list[str]) -> RunOptions:
    args = run_parser().parse_args(argv)
    delimiter = "\0" if args.null else _unescape(args.delimiter)
    command, sources = _split_sources(list(args.command), delimiter)
    for path in args.arg_file:
        sources.append(Source(_read(path, delimiter)))
    halt = _checked_common(args, "conveyor run")
    return RunOptions(
        command=command,
        sources=sources,
        jobs=_slots(args.jobs),
        keep_order=args.keep_order,
        output=args.output,
        tag=args.tag,
        timeout=args.timeout,
        retries=args.retries,
        halt=halt,
        joblog=args.joblog,
        dry_run=args.dry_run,
        bar=args.bar,
        link=args.link,
        delimiter=delimiter,
        resume=args.resume,
        results=args.results,
    )


def _checked_common(args: argparse.Namespace, prog: str) -> Halt | None:
    """The checks ``run`` and ``map`` share; returns the parsed ``--halt``."""
    if args.retries < 0:
        raise UsageError(f"{prog}: --retries must be 0 or more, not {args.retries}")
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError(
            f"{prog}: --timeout must be a positive number of seconds, not {args.timeout}"
        )
    if args.resume and (args.joblog is None or args.joblog in ("-", "+-")):
        raise UsageError(f"{prog}: --{args.resume} needs --joblog FILE (what to resume)")
    try:
        return Halt.parse(args.halt)
    except HaltSyntaxError as exc:
        raise UsageError(f"{prog}: {exc}") from None


def _split_sources(words: list[str], delimiter: str | None) -> tuple[list[str], list[Source]]:
    if words[:1] == ["--"]:
        words = words[1:]
    command: list[str] = []
    sources: list[Source] = []
    marker: str | None = None
    for word in words:
        if word in MARKERS:
            marker = word
            sources.append(Source([], linked=word.endswith("+")))
            continue
        if marker is None:
            command.append(word)
        elif marker.startswith("::::"):
            values = sources[-1].values
            assert values is not None
            values.extend(_read(word, delimiter))
        else:
            values = sources[-1].values
            assert values is not None
            values.append(word)
    return command, sources


def _read(path: str, delimiter: str | None) -> list[str]:
    try:
        return read_file(path, delimiter)
    except OSError as exc:
        raise UsageError(f"conveyor run: cannot read input file {path!r}: {exc.strerror}") from None


def _slots(text: str) -> int:
    cpus = available_cpus()
    try:
        if text.endswith("%"):
            slots = int(float(text[:-1]) * cpus / 100)
        elif text.startswith(("+", "-")):
            slots = cpus + int(text)
        else:
            slots = int(text)
    except ValueError:
        raise UsageError(f"conveyor run: -j {text!r}: expected N, N%, +N, -N or 0") from None
    if slots == 0 and not text.endswith("%"):
        slots = cpus
    return max(1, slots)


def _unescape(text: str | None) -> str | None:
    if text is None:
        return None
    return text.encode().decode("unicode_escape") if "\\" in text else text


def usage_error(exc: UsageError) -> int:
    print(exc, file=sys.stderr)
    print("--help lists the options", file=sys.stderr)
    return BAD_USAGE


__all__ = [
    "BAD_USAGE",
    "MapOptions",
    "RunOptions",
    "UsageError",
    "map_parser",
    "parse_map",
    "parse_run",
    "run_parser",
    "usage_error",
]
