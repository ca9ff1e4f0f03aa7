"""The fixed stratified k-fold split: partition, complement, stratification, determinism."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nnunet_nerve.registry.splits import nnunet_splits, stratified_folds


def paper_cohorts(volunteers=10, patients=42) -> dict:
    cases = {f"sub-{i:03d}": "volunteer" for i in range(1, volunteers + 1)}
    cases.update({f"sub-{i:03d}": "patient" for i in range(volunteers + 1, volunteers + patients + 1)})
    return cases


def check_split(strata: dict, splits: list, n_folds: int) -> None:
    assert len(splits) == n_folds
    vals = [set(f["val"]) for f in splits]
    assert sum(len(v) for v in vals) == len(strata)
    assert set().union(*vals) == set(strata)  # folds partition the cases
    for fold in splits:
        assert set(fold["train"]) == set(strata) - set(fold["val"])  # train is the complement
        assert fold["train"] == sorted(fold["train"]) and fold["val"] == sorted(fold["val"])
    sizes = [len(v) for v in vals]
    assert max(sizes) - min(sizes) <= 1
    for cohort in set(strata.values()):
        n = sum(1 for c in strata.values() if c == cohort)
        per_fold = [sum(1 for case in v if strata[case] == cohort) for v in vals]
        assert min(per_fold) >= n // n_folds and max(per_fold) <= -(-n // n_folds), (cohort, per_fold)


def test_paper_split_13_per_fold_at_least_two_volunteers():
    strata = paper_cohorts()
    for seed in range(20):
        splits = nnunet_splits(strata, 4, seed)
        check_split(strata, splits, 4)
        assert [len(f["val"]) for f in splits] == [13, 13, 13, 13]
        assert [len(f["train"]) for f in splits] == [39, 39, 39, 39]
        assert all(sum(strata[c] == "volunteer" for c in f["val"]) >= 2 for f in splits)


@pytest.mark.parametrize("volunteers,patients,folds", [(8, 0, 4), (8, 3, 4), (9, 17, 4), (2, 5, 2), (3, 4, 5),
                                                       (0, 7, 3), (1, 1, 2)])
def test_properties_for_other_sizes(volunteers, patients, folds):
    strata = paper_cohorts(volunteers, patients)
    splits = nnunet_splits(strata, folds, seed=3)
    check_split(strata, splits, folds)
    if volunteers >= 8 and folds == 4:
        assert all(sum(strata[c] == "volunteer" for c in f["val"]) >= 2 for f in splits)


def test_independent_of_input_order_and_deterministic():
    strata = paper_cohorts()
    items = list(strata.items())
    np.random.default_rng(1).shuffle(items)
    assert nnunet_splits(dict(items), 4, 5) == nnunet_splits(strata, 4, 5)
    assert nnunet_splits(strata, 4, 5) != nnunet_splits(strata, 4, 6)  # the seed matters


def test_same_split_under_other_hash_seeds():
    code = ("import json; from nnunet_nerve.registry.splits import nnunet_splits;"
            "s = {f'sub-{i:03d}': ('volunteer' if i < 11 else 'patient') for i in range(1, 53)};"
            "print(json.dumps(nnunet_splits(s, 4, 0)))")
    outputs = set()
    for hash_seed in ("0", "1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        outputs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                   check=True).stdout)
    assert len(outputs) == 1
    assert json.loads(outputs.pop()) == nnunet_splits(paper_cohorts(), 4, 0)


def test_pinned_split_guards_against_rng_changes():
    # numpy's PCG64 stream is stable across platforms and versions; if this ever changes, every
    # registry's split changes with it, and so must this pinned value (on purpose, not silently).
    strata = paper_cohorts(4, 6)
    assert stratified_folds(strata, 2, seed=0) == PINNED


PINNED = [["sub-002", "sub-003", "sub-006", "sub-007", "sub-010"],
          ["sub-001", "sub-004", "sub-005", "sub-008", "sub-009"]]


def test_refusals():
    with pytest.raises(ValueError, match="cannot be split"):
        stratified_folds(paper_cohorts(1, 2), 4)
    with pytest.raises(ValueError, match="at least 2 folds"):
        stratified_folds(paper_cohorts(), 1)
