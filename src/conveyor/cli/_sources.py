"""Where a run's arguments come from, GNU parallel's way.

Each ``:::`` group is a source of literal values, each ``::::`` group a source of files
read record by record; with none, records come from stdin. Several sources make the
cartesian product of their values (the first varies slowest); a source given with
``:::+`` or ``::::+`` is zipped with the one before it instead (stopping at the shorter);
``--link`` zips them all, the shorter ones wrapped around. A job's arguments are a tuple,
one value per (zipped) source.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass
class Source:
    values: list[str] | None  # None: read lazily (stdin)
    linked: bool = False  # :::+ / ::::+: zipped with the source before it


def read_records(stream: Iterable[str], delimiter: str | None) -> Iterator[str]:
    """Records of a text stream: lines without their end, or pieces between ``delimiter``."""
    if delimiter is None:
        for line in stream:
            yield line[:-1] if line.endswith("\n") else line
        return
    pending = ""
    for chunk in stream:
        pending += chunk
        *records, pending = pending.split(delimiter)
        yield from records
    if pending:
        yield pending


def read_file(path: str, delimiter: str | None) -> list[str]:
    if path == "-":
        return list(read_records(sys.stdin, delimiter))
    with open(path, encoding="utf-8", newline="") as file:
        return list(read_records(file, delimiter))


def job_arguments(
    sources: list[Source], *, link: bool, stdin: Iterable[str] | None, delimiter: str | None
) -> Iterator[tuple[str, ...]]:
    """Every job's arguments, in GNU parallel's order."""
    if not sources:
        assert stdin is not None
        for record in read_records(stdin, delimiter):
            yield (record,)
        return
    groups: list[list[list[str]]] = []  # each group: sources zipped together
    for source in sources:
        values = source.values or []
        if source.linked and groups:
            groups[-1].append(values)
        else:
            groups.append([values])
    columns = [_zip_group(group) for group in groups]
    if link:
        yield from _linked(columns)
        return
    for combination in itertools.product(*columns):
        yield tuple(value for part in combination for value in part)


def _zip_group(group: list[list[str]]) -> list[tuple[str, ...]]:
    return list(zip(*group, strict=False))  # :::+ stops at the shorter, as GNU's


def _linked(columns: list[list[tuple[str, ...]]]) -> Iterator[tuple[str, ...]]:
    longest = max((len(c) for c in columns), default=0)
    if any(not c for c in columns):
        return
    for i in range(longest):
        yield tuple(value for column in columns for value in column[i % len(column)])


__all__ = ["Source", "job_arguments", "read_file", "read_records"]
