"""Markdown tables, by tabulate: GitHub's pipe format with every cell as the caller formatted it.

Unaligned (no padding to the column's width): a changed figure changes its own line of a
committed report, not every line of its column, and a test can find a row by its text. The
cells are text the caller formatted (intervals, signs, units), so tabulate parses no numbers.
"""

from collections.abc import Iterable, Sequence

from tabulate import tabulate


def pipe_table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    """The table, ending with a newline; ``None`` cells are empty."""
    return tabulate([list(row) for row in rows], headers=list(headers), tablefmt="github", stralign=None,
                    numalign=None, disable_numparse=True, missingval="") + "\n"
