"""A job's command line: the template with its replacement strings filled in.

GNU parallel's strings: ``{}`` the arguments, ``{.}`` without the extension, ``{/}`` the
basename, ``{//}`` the directory, ``{/.}`` the basename without extension, ``{#}`` the
job's sequence number, ``{%}`` its slot, and ``{n}`` (with the same suffixes: ``{2.}``,
``{-1/}``) the n-th argument. A template with none gets `` {}`` appended. Values are
shell-quoted, so input is data and never code (``a; rm -rf x`` reaches the command as one
argument), unless the template starts with a replacement string (the input *is* the
command, as in GNU parallel).
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass

_TOKEN = re.compile(r"\{(-?\d+)?(\.|/|//|/\.)?\}|\{#\}|\{%\}")


@dataclass(frozen=True)
class Template:
    text: str
    quote: bool

    @classmethod
    def parse(cls, words: list[str]) -> Template:
        text = " ".join(words)
        if not _TOKEN.search(text):
            text = f"{text} {{}}" if text else "{}"
        starts_with_token = _TOKEN.match(text) is not None
        return cls(text, quote=not starts_with_token)

    @property
    def uses_seq(self) -> bool:
        """The command holds the job's position (``{#}``), so the position is its identity."""
        return "{#}" in self.text

    def render(self, arguments: tuple[str, ...], seq: int, slot: int) -> str:
        def fill(match: re.Match[str]) -> str:
            whole = match.group(0)
            if whole == "{#}":
                return str(seq)
            if whole == "{%}":
                return str(slot)
            position, transform = match.group(1), match.group(2) or ""
            if position is None:
                values = [_transformed(a, transform) for a in arguments]
            else:
                index = int(position)
                index = index - 1 if index > 0 else len(arguments) + index
                if not 0 <= index < len(arguments):
                    return ""
                values = [_transformed(arguments[index], transform)]
            if self.quote:
                return " ".join(shlex.quote(v) for v in values)
            return " ".join(values)

        return _TOKEN.sub(fill, self.text)


def _transformed(value: str, transform: str) -> str:
    if transform == ".":
        return _without_extension(value)
    if transform == "/":
        return os.path.basename(value)
    if transform == "//":
        return os.path.dirname(value) or "."
    if transform == "/.":
        return _without_extension(os.path.basename(value))
    return value


def _without_extension(value: str) -> str:
    head, tail = os.path.split(value)
    stem, dot, _ = tail.rpartition(".")
    if not dot or not stem:
        return value
    return os.path.join(head, stem) if head else stem


__all__ = ["Template"]
