"""Tables a person reads: aligned plain text for the terminal, markdown for report files."""

from __future__ import annotations

from collections.abc import Sequence


def _widths(rows: Sequence[Sequence[object]], header: Sequence[str]) -> list[int]:
    return [max(len(str(x)) for x in col) for col in zip(header, *rows)]


def text_table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """Columns padded to their widest cell, a dashed rule under the header."""
    widths = _widths(rows, header)
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def markdown_table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A markdown pipe table, padded so that it also reads well as plain text."""
    widths = _widths(rows, header)
    line = lambda r: "| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])
