"""The fixed k-fold split, stratified by cohort, in nnU-Net's splits_final.json format.

Deterministic for a set of cases and a seed on any machine: case ids are sorted first,
then shuffled within each cohort with ``numpy.random.default_rng(seed)`` (PCG64, the same
stream everywhere); no file-system order and no Python ``hash()`` is involved.

Dealing: cohorts are taken smallest first (ties by name); each cohort's shuffled cases are
dealt round-robin to the folds, continuing from the fold where the previous cohort
stopped. So every fold holds floor(n_c/k) or ceil(n_c/k) cases of each cohort c, and fold
sizes differ by at most one (10 volunteers + 42 patients, k=4: 13 cases per fold, each
with 2 or 3 volunteers).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np


def stratified_folds(strata: Mapping[str, str], n_folds: int = 4, seed: int = 0) -> list:
    """The validation cases of each fold: ``n_folds`` sorted lists that partition the cases.

    ``strata`` maps case id -> stratum (the cohort). ValueError when there are fewer cases
    than folds or fewer than two folds.
    """
    if n_folds < 2:
        raise ValueError(f"need at least 2 folds, got {n_folds}")
    if len(strata) < n_folds:
        raise ValueError(f"{len(strata)} cases cannot be split into {n_folds} folds")
    rng = np.random.default_rng(seed)
    by_stratum: dict = {}
    for case in sorted(strata):
        by_stratum.setdefault(strata[case], []).append(case)
    folds = [[] for _ in range(n_folds)]
    position = 0
    for stratum in sorted(by_stratum, key=lambda s: (len(by_stratum[s]), s)):
        cases = by_stratum[stratum]
        for i in rng.permutation(len(cases)):
            folds[position % n_folds].append(cases[int(i)])
            position += 1
    return [sorted(f) for f in folds]


def nnunet_splits(strata: Mapping[str, str], n_folds: int = 4, seed: int = 0) -> list:
    """nnU-Net's splits_final.json content: one ``{"train": [...], "val": [...]}`` per fold,
    train being the complement of val; both sorted."""
    all_cases = sorted(strata)
    out = []
    for val in stratified_folds(strata, n_folds, seed):
        held = set(val)
        out.append({"train": [c for c in all_cases if c not in held], "val": list(val)})
    return out
