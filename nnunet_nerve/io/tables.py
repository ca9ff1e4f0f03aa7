"""Writing CSV tables: one convention for every CSV file the package writes.

A cell is empty when the value does not exist (``None``: no nerve in the slice, no image,
a column that does not apply); a number is written as Python writes it, so an infinite
value is ``inf`` (or ``-inf``) and an undefined one ``nan`` (pandas, R and spreadsheets
read both as numbers); flags are ``1``/``0``. Floats have full precision unless the
writer asks for ``digits`` significant digits. See docs/evaluation.md, *Outputs*.
"""
from __future__ import annotations

import csv
import numbers
import os

import numpy as np


def csv_cell(value, digits: "int | None" = None) -> str:
    """The text of one cell: ``""`` for None, ``1``/``0`` for a flag, a real number as
    ``str`` (full precision; ``inf``, ``-inf``, ``nan``) or with ``digits`` significant
    digits (``format(value, ".<digits>g")``, which also gives ``inf`` and ``nan``), anything
    else as ``str``."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return str(float(value)) if digits is None else format(float(value), f".{digits}g")
    return str(value)


def write_csv(path: "str | os.PathLike", columns, rows, digits: "int | None" = None) -> None:
    """``rows`` (dicts) as CSV with a header of ``columns`` (other keys ignored, a missing
    key an empty cell), every cell by ``csv_cell``; lines end in ``\\n``."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([csv_cell(row.get(c), digits) for c in columns])
