"""The one CSV convention (nnunet_nerve/io/tables.py): read back with the standard csv module."""
from __future__ import annotations

import csv
import math

import numpy as np

from nnunet_nerve.io.tables import csv_cell, write_csv


def test_cells_follow_the_documented_convention():
    assert csv_cell(None) == ""
    assert csv_cell(True) == "1" and csv_cell(np.bool_(False)) == "0"
    assert csv_cell(math.inf) == "inf" and csv_cell(-math.inf) == "-inf" and csv_cell(math.nan) == "nan"
    assert csv_cell(math.inf, 6) == "inf" and csv_cell(np.float64("nan"), 6) == "nan"
    assert csv_cell(0.1 + 0.2) == repr(0.1 + 0.2)  # full precision
    assert csv_cell(np.float32(0.5)) == "0.5" and csv_cell(np.int64(7)) == "7" and csv_cell("sub-01") == "sub-01"
    assert csv_cell(1234.56789, 6) == "1234.57"


def test_write_csv_round_trips_through_the_csv_module(tmp_path):
    path = tmp_path / "t.csv"
    rows = [{"case": "a", "d": math.inf, "m": math.nan, "flag": True, "extra": 1},
            {"case": "b", "d": 1.5, "flag": False}]
    write_csv(path, ("case", "d", "m", "flag"), rows)
    assert path.read_bytes().count(b"\r") == 0
    back = list(csv.DictReader(path.open(newline="")))
    assert back[0] == {"case": "a", "d": "inf", "m": "nan", "flag": "1"}
    assert back[1] == {"case": "b", "d": "1.5", "m": "", "flag": "0"}
    assert math.isinf(float(back[0]["d"])) and math.isnan(float(back[0]["m"]))
