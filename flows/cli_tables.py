"""Tables laid out for the terminal they are printed on: `flywheel models`, the gate table and the run summary.

Rich fits a table that is too wide by folding every column, headers included, at any character
(`audio_to_ima` / `ge_r1` at 140 columns). A `FittedTable` chooses the column widths itself, for the width it
is rendered at:

- a header breaks only between words: at a space, or after an underscore of a snake_case name
  (`audio_to_` / `image_r1`);
- a column of numbers, names or verdicts is as wide as its widest cell; only a column declared `fold`
  (free text, ids, paths, dates) wraps its cells;
- when even that does not fit, the columns with the lowest `keep` are left out, and the caption names them.

Every line, borders included, fits the width.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console, ConsoleOptions, JustifyMethod, RenderResult
from rich.markup import escape
from rich.table import Table
from rich.text import Text

FOLD_MIN_WIDTH = 10  # a folding column narrower than this reads as a stack of fragments
FOLD_WORD_MAX = 20  # a longer word in a folding column (a hash, a path) is folded anyway
_HEADER_PART = re.compile(r"[^_]+_*|_+")  # a snake_case name breaks after its underscores: audio_ | to_ | image_ | r1


@dataclass(frozen=True)
class Col:
    header: str  # plain text, as the tags and the docs spell it
    fold: bool = False  # long cells wrap over lines; else the column is as wide as its widest cell
    keep: int = 0  # when the columns do not fit, the lowest `keep` goes first (of equals, the rightmost)
    justify: JustifyMethod = "left"


def header_lines(header: str, width: int) -> list[str]:
    """`header` wrapped to `width` between words only (spaces, and after underscores); a part longer than
    `width` stays whole on its own line."""
    lines: list[str] = []
    line = ""
    for word in header.split():
        for index, part in enumerate(_HEADER_PART.findall(word)):
            joined = f"{line}{'' if index else ' '}{part}" if line else part
            if line and len(joined) > width:
                lines.append(line)
                line = part
            else:
                line = joined
    return [*lines, line]


def table_width(content_widths: Sequence[int]) -> int:
    """A rich table's width from its columns' content widths: padding of 1 each side, a rule between columns
    and one at each edge."""
    return sum(content_widths) + 3 * len(content_widths) + 1


def fit_columns(columns: Sequence[Col], rows: Sequence[Sequence[str]], width: int) -> tuple[dict[int, int], list[int]]:
    """The columns to show (index -> content width) and the ones left out, for a table `width` cells wide.

    Each column needs its longest header part and, unless it folds, its widest cell; a folding column needs
    `_fold_need` (about `FOLD_MIN_WIDTH`). Columns are left out by `keep` until the needs fit. The room left first
    makes the headers as few lines high as it can (the same height for all), then goes towards each column's
    natural width (header on one line, no cell wrapped): the folding columns first, then the others.
    """
    cells = [[_cell_width(row[i]) for row in rows] for i in range(len(columns))]
    natural = [max([len(c.header), *cells[i]]) for i, c in enumerate(columns)]
    need = [max([*map(len, _header_parts(c.header)),
                 _fold_need([row[i] for row in rows]) if c.fold else max(cells[i], default=0)])
            for i, c in enumerate(columns)]
    shown = list(range(len(columns)))
    drop_order = sorted(shown, key=lambda i: (columns[i].keep, -i))
    while len(shown) > 1 and table_width([need[i] for i in shown]) > width:
        shown.remove(drop_order.pop(0))
    widths = {i: need[i] for i in shown}
    room = width - table_width(list(widths.values()))
    for lines in range(1, max(len(header_lines(columns[i].header, need[i])) for i in shown)):
        taller = {i: max(widths[i], _width_for_lines(columns[i].header, lines)) for i in shown}
        if sum(taller.values()) - sum(widths.values()) <= room:
            room -= sum(taller.values()) - sum(widths.values())
            widths = taller
            break
    # Wrapped cells cost a line per row, a wrapped header one line: the folding columns first, sharing the room
    # evenly (one that needs less than its share gets what it needs), then the others.
    for group in ([i for i in shown if columns[i].fold], [i for i in shown if not columns[i].fold]):
        group.sort(key=lambda i: natural[i] - widths[i])
        for left, i in enumerate(group):
            grant = max(0, min(room // (len(group) - left), natural[i] - widths[i]))
            widths[i] += grant
            room -= grant
    return widths, [i for i in range(len(columns)) if i not in widths]


def _fold_need(cells: Sequence[str]) -> int:
    """A folding column's least width: `FOLD_MIN_WIDTH`, or its longest word (`@challenger`, a date) up to
    `FOLD_WORD_MAX` so that such a word stays whole; never more than its widest cell."""
    words = [len(word) for cell in cells for word in Text.from_markup(cell).plain.split()]
    longest = max([w for w in words if w <= FOLD_WORD_MAX], default=0)
    return min(max([_cell_width(cell) for cell in cells], default=0), max(FOLD_MIN_WIDTH, longest))


def _width_for_lines(header: str, lines: int) -> int:
    """The narrowest width at which `header` wraps to at most `lines` lines."""
    width = max(map(len, _header_parts(header)))
    while len(header_lines(header, width)) > lines:
        width += 1
    return width


def _header_parts(header: str) -> list[str]:
    return [part for word in header.split() for part in _HEADER_PART.findall(word)]


def _cell_width(cell: str) -> int:
    """The printed width of a cell written in rich markup, its longest line."""
    return max((Text.from_markup(line).cell_len for line in cell.split("\n")), default=0)


class FittedTable:
    """A rich table whose columns are laid out for the width it is printed at (see the module docstring).

    Cells are rich markup (escape text that may hold `[`); headers are plain text.
    """

    def __init__(self, columns: Sequence[Col], title: str | None = None) -> None:
        self.columns = list(columns)
        self.title = title
        self.rows: list[list[str]] = []

    def add_row(self, *cells: str) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"a row of {len(cells)} cells for {len(self.columns)} columns "
                             f"({', '.join(c.header for c in self.columns)})")
        self.rows.append(list(cells))

    @property
    def row_count(self) -> int:
        return len(self.rows)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table_for(options.max_width)

    def table_for(self, width: int) -> Table:
        """The rich table as laid out for `width` cells."""
        widths, left_out = fit_columns(self.columns, self.rows, width)
        caption = None
        if left_out:
            caption = (f"not shown at {width} columns: {', '.join(self.columns[i].header for i in left_out)} "
                       "(a wider terminal shows them)")
        table = Table(title=self.title, title_justify="left", caption=caption and escape(caption),
                      caption_justify="left")
        for i, column_width in widths.items():
            column = self.columns[i]
            table.add_column(Text("\n".join(header_lines(column.header, column_width))), width=column_width,
                             justify=column.justify, overflow="fold")
        for row in self.rows:
            table.add_row(*(row[i] for i in widths))
        return table
