"""Errors the workbook raises for bad input: they name the file, line and field."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Problem:
    """One problem found in an input file."""

    message: str
    line: int | None = None
    field: str | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column is not None:
            where.append(f"column {self.column}")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        return (", ".join(where) + ": " if where else "") + self.message


class DataError(ValueError):
    """Bad input data. Collects every problem of one file into one error."""

    def __init__(self, path: object, problems: list[Problem] | Problem | str):
        if isinstance(problems, (str, Problem)):
            problems = [problems if isinstance(problems, Problem) else Problem(problems)]
        self.path = str(path)
        self.problems: list[Problem] = list(problems)
        lines = [f"{self.path}: {len(self.problems)} problem(s)"] if len(self.problems) > 1 else []
        if len(self.problems) == 1:
            super().__init__(f"{self.path}: {self.problems[0]}")
        else:
            super().__init__("\n".join(lines + [f"  - {p}" for p in self.problems]))


@dataclass
class ParameterError(ValueError):
    """A notebook parameter that is unknown or of the wrong type."""

    notebook: str
    messages: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.notebook}: " + "; ".join(self.messages)


def read_text_file(path: str | os.PathLike[str], what: str, encoding: str = "utf-8") -> tuple[str, bytes]:
    """``(text, raw bytes)`` of a UTF-8 input file; a :class:`DataError` naming the file otherwise."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(path, f"cannot read {what}: {e.strerror or e}") from e
    try:
        return raw.decode(encoding), raw
    except UnicodeDecodeError as e:
        raise DataError(path, f"{what} is not UTF-8 text (byte {e.start})") from e
