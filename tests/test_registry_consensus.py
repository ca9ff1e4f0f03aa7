"""Consensus of rater masks: majority vote (more than half of the raters) and SimpleITK's STAPLE at 0.5."""
from __future__ import annotations

import numpy as np
import pytest

from nnunet_nerve.registry.consensus import consensus, majority_vote, staple


def test_majority_of_three_is_two():
    a = np.array([[1, 1, 0, 0, 1]])
    b = np.array([[1, 0, 1, 0, 0]])
    c = np.array([[0, 1, 1, 0, 0]])
    np.testing.assert_array_equal(majority_vote([a, b, c]), [[1, 1, 1, 0, 0]])
    assert majority_vote([a, b, c]).dtype == np.uint8


def test_majority_is_strictly_more_than_half():
    masks = [np.array([1, 1, 1, 0]), np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]), np.array([0, 0, 0, 1])]
    np.testing.assert_array_equal(majority_vote(masks), [1, 0, 0, 0])  # 3 of 4 needed; 2 of 4 is a tie
    np.testing.assert_array_equal(majority_vote(masks[:2]), [1, 1, 0, 0])  # 2 raters: both
    np.testing.assert_array_equal(majority_vote(masks[:1]), masks[0])


def test_any_non_zero_value_is_nerve():
    np.testing.assert_array_equal(majority_vote([np.array([255, 0]), np.array([1.0, 0.0]), np.array([0, 7])]), [1, 0])


def test_staple_agrees_where_raters_agree_and_follows_the_reliable_raters():
    rng = np.random.default_rng(0)
    truth = np.zeros((6, 40, 40), np.uint8)
    truth[:, 10:25, 12:30] = 1
    good = [truth.copy() for _ in range(3)]
    for g in good:
        flip = rng.random(truth.shape) < 0.01
        g[flip] = 1 - g[flip]
    result = staple(good)
    assert result.dtype == np.uint8 and set(np.unique(result)) <= {0, 1}
    assert (result == truth).mean() > 0.995
    np.testing.assert_array_equal(staple([truth, truth, truth]), truth)


def test_staple_of_empty_masks_is_empty():
    empty = np.zeros((2, 5, 5), np.uint8)
    np.testing.assert_array_equal(staple([empty, empty, empty]), empty)


def test_errors():
    with pytest.raises(ValueError, match="at least one"):
        majority_vote([])
    with pytest.raises(ValueError, match="differ in shape"):
        majority_vote([np.zeros(3), np.zeros(4)])
    with pytest.raises(ValueError, match="unknown consensus method"):
        consensus([np.zeros(3)], "mean")
