"""The DataFrame of ``Results.table`` and the tables derived from it: it prints whole.

``print(results.table)`` must read well in a terminal and a notebook; pandas would cut a wide
frame to ``[16 rows x 24 columns]``.
"""

from __future__ import annotations

import shutil

import pandas as pd

__all__ = ["ResultsTable", "printable"]


class ResultsTable(pd.DataFrame):
    """A DataFrame that prints whole: all rows and columns, 4 significant digits, wrapped to
    the terminal's width (``Results.table`` and what is derived from it)."""

    @property
    def _constructor(self):
        return ResultsTable

    def _options(self):
        width = shutil.get_terminal_size((120, 40)).columns
        return pd.option_context(
            "display.max_rows",
            None,
            "display.max_columns",
            None,
            "display.width",
            width,
            "display.max_colwidth",
            None,
            "display.float_format",
            "{:.4g}".format,
        )

    def __repr__(self) -> str:
        with self._options():
            return super().__repr__()

    def _repr_html_(self):
        with self._options():
            return super()._repr_html_()


def printable(df):
    """``df`` as a :class:`ResultsTable` (prints whole); None stays None."""
    if df is None:
        return None
    return ResultsTable(df)
