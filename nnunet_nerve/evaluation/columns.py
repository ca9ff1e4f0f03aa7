"""The metric columns of evaluation rows (per_case.csv, table1.csv), their labels, and the two
HD95 definitions a report can show. Kept free of heavy imports: the CLI reads it to build
``evaluate --hd95``'s choices.

* ``hd95_mm``: the paper's HD95, EvaluateSegmentation's ``HDRFDST@0.95@``
  (``metrics.hd95_evaluatesegmentation``);
* ``hd95_surface_mm``: the surface-based HD95 (``metrics.hd95_surface``);
* ``dice``, ``vs``: ratios; ``hd_mm``, ``assd_mm``: surface distances in mm.
"""
from __future__ import annotations

#: Metric columns of a row, in output order: (key, label for tables).
METRICS = (("dice", "Dice"), ("hd95_mm", "HD95 (mm)"), ("vs", "VS"), ("hd95_surface_mm", "HD95 surface (mm)"),
           ("hd_mm", "HD (mm)"), ("assd_mm", "ASSD (mm)"))
METRIC_LABELS = dict(METRICS)
#: ``evaluate --hd95`` choice -> the row key Table 1, Figure 2 and the tests in table1.md use.
HD95_DEFINITIONS = {"evaluatesegmentation": "hd95_mm", "surface": "hd95_surface_mm"}
DEFAULT_HD95 = "evaluatesegmentation"
