"""Tables in the notebooks: rendered as HTML in Jupyter (and on a site built from the stored
outputs), with an aligned plain-text form as the output's ``text/plain`` (what nbval compares in a
checked cell, and what a terminal shows).

``Table(header, rows, caption=None, notes=None)``: ``header`` a sequence of column titles,
``rows`` a sequence of rows of the same length (any values; ``None`` shows as an empty cell;
floats should be formatted by the caller, e.g. with :func:`tutorial_lib.stats.format_rate`),
``caption`` a line above, ``notes`` a line below (sources, sample sizes, what an interval means).
Display it as a cell's last value, or with ``IPython.display.display(table)``.
"""
from __future__ import annotations

import html
from typing import Any, Optional, Sequence

__all__ = ["Table"]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class Table:
    """A table with a header, rendered as HTML and as aligned text (see the module's docstring)."""

    def __init__(self, header: Sequence[Any], rows: Sequence[Sequence[Any]], caption: Optional[str] = None,
                 notes: Optional[str] = None):
        self.header = [_text(h) for h in header]
        if not self.header:
            raise ValueError("a table needs at least one column")
        self.rows = [[_text(v) for v in row] for row in rows]
        for i, row in enumerate(self.rows):
            if len(row) != len(self.header):
                raise ValueError(f"row {i} has {len(row)} cells, the header {len(self.header)}: {row}")
        self.caption, self.notes = caption, notes

    def __repr__(self) -> str:
        widths = [max(len(r[j]) for r in [self.header] + self.rows) for j in range(len(self.header))]

        def line(cells):
            return " | ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

        out = [self.caption] if self.caption else []
        out += [line(self.header), "-+-".join("-" * w for w in widths)]
        out += [line(r) for r in self.rows]
        if self.notes:
            out.append(self.notes)
        return "\n".join(out)

    def _repr_html_(self) -> str:
        cells = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in self.rows)
        caption = f"<caption>{html.escape(self.caption)}</caption>" if self.caption else ""
        notes = f"<p><small>{html.escape(self.notes)}</small></p>" if self.notes else ""
        return f"<table>{caption}<thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>{notes}"

    def column(self, title: str) -> list:
        """The text of one column, by its title (tests and checks read tables this way)."""
        return [row[self.header.index(title)] for row in self.rows]
