"""nnunet_nerve.evaluation.metrics against medpy (an independent implementation), against the paper's
HD95 written out by brute force from its definition (evaluatesegmentation_reference), and against values known
analytically, on random, nerve-like and empty masks with the paper's anisotropic spacing
(4.0 x 0.52 x 0.52 mm, z y x)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from medpy.metric import binary as medpy_binary
from scipy import ndimage

from evaluatesegmentation_reference import paper_hd95_brute_force
from nnunet_nerve.evaluation import metrics

PAPER_SPACING = (4.0, 0.52, 0.52)
medpy_surface_distances = vars(medpy_binary)["__surface_distances"]


def medpy_reference(pred, ref, spacing) -> dict:
    """Every metric from medpy: hd, assd and dc directly; the surface HD95 as the larger directed
    95th percentile of medpy's own surface distances (medpy's hd95 pools both directions); the
    paper's HD95 by brute force."""
    d_pred = medpy_surface_distances(pred, ref, spacing, 1)
    d_ref = medpy_surface_distances(ref, pred, spacing, 1)
    a, b = int(pred.sum()), int(ref.sum())
    return {"dice": medpy_binary.dc(pred, ref),
            "hd95_mm": paper_hd95_brute_force(pred, ref, spacing),
            "hd95_surface_mm": max(np.percentile(d_pred, 95), np.percentile(d_ref, 95)),
            "hd_mm": medpy_binary.hd(pred, ref, spacing),
            "assd_mm": medpy_binary.assd(pred, ref, spacing),
            "vs": 1 - abs(a - b) / (a + b)}


def nerve_like(rng, shape, radius, drift=(0.5, -0.3), jitter=0.5, offset=(0, 0), branch=False) -> np.ndarray:
    """A tube along z whose centre drifts and jitters per slice; optionally a second branch
    splitting off halfway (the sciatic nerve's tibial and peroneal parts)."""
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    cy = shape[1] / 2 + offset[0] + drift[0] * z + rng.normal(0, jitter, (shape[0], 1, 1))
    cx = shape[2] / 2 + offset[1] + drift[1] * z + rng.normal(0, jitter, (shape[0], 1, 1))
    mask = (y - cy) ** 2 + (x - cx) ** 2 < radius ** 2
    if branch:
        split = shape[0] // 2
        bx = cx + np.maximum(z - split, 0) * 2.0
        mask |= ((y - cy) ** 2 + (x - bx) ** 2 < (0.7 * radius) ** 2) & (z >= split)
    return mask


def assert_matches(ours: dict, reference: dict) -> None:
    assert set(ours) == set(reference)
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


@pytest.mark.parametrize("seed", range(6))
def test_random_masks_match_medpy(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(5, 24, size=3))
    spacing = tuple(float(s) for s in rng.uniform(0.3, 5.0, size=3))
    pred = rng.random(shape) < rng.uniform(0.05, 0.6)
    ref = rng.random(shape) < rng.uniform(0.05, 0.6)
    assert_matches(metrics.all_metrics(pred, ref, spacing), medpy_reference(pred, ref, spacing))


@pytest.mark.parametrize("seed", range(4))
def test_nerve_like_masks_with_paper_spacing_match_medpy(seed):
    rng = np.random.default_rng(100 + seed)
    shape = (20, 64, 80)
    ref = nerve_like(rng, shape, radius=6, branch=seed % 2 == 0)
    pred = nerve_like(rng, shape, radius=5.5 + rng.random(), offset=(rng.normal(0, 1), rng.normal(0, 1)),
                      branch=seed % 2 == 0)
    pred[rng.integers(0, shape[0])] = False          # a slice the model missed
    pred[3, 5:9, 5:9] = True                         # a false positive far from the nerve (a vein)
    ours = metrics.all_metrics(pred, ref, PAPER_SPACING)
    assert_matches(ours, medpy_reference(pred, ref, PAPER_SPACING))
    assert 0.3 < ours["dice"] < 1 and ours["hd95_surface_mm"] <= ours["hd_mm"]


def test_masks_touching_the_array_border_match_medpy():
    """The bounding box is clipped to the array; border voxels count as surface, as in medpy."""
    rng = np.random.default_rng(3)
    shape = (8, 30, 30)
    ref = nerve_like(rng, shape, radius=9, drift=(0, 0))
    pred = np.roll(ref, 2, axis=2)
    pred[:, :, :2] = True
    assert ref[0].any() and ref[-1].any() and pred[:, :, 0].any()
    assert_matches(metrics.all_metrics(pred, ref, PAPER_SPACING), medpy_reference(pred, ref, PAPER_SPACING))


def test_bounding_box_gives_the_full_array_values():
    """Distances computed on the joint bounding box equal those on the whole array."""
    rng = np.random.default_rng(5)
    big = np.zeros((30, 200, 220), dtype=bool)
    small_ref = nerve_like(rng, (10, 40, 40), radius=7)
    small_pred = nerve_like(rng, (10, 40, 40), radius=6, offset=(2, -1))
    ref, pred = big.copy(), big.copy()
    ref[12:22, 100:140, 150:190] = small_ref
    pred[12:22, 100:140, 150:190] = small_pred
    sampling = np.array(PAPER_SPACING)
    structure = ndimage.generate_binary_structure(3, 1)
    full_surface = [m & ~ndimage.binary_erosion(m, structure) for m in (pred, ref)]
    to_ref = ndimage.distance_transform_edt(~full_surface[1], sampling=sampling)[full_surface[0]]
    to_pred = ndimage.distance_transform_edt(~full_surface[0], sampling=sampling)[full_surface[1]]
    d = metrics.surface_distances(pred, ref, PAPER_SPACING)
    np.testing.assert_allclose(np.sort(d.pred_to_ref), np.sort(to_ref), rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.sort(d.ref_to_pred), np.sort(to_pred), rtol=0, atol=1e-12)


def test_two_single_voxels_a_known_distance_apart():
    pred = np.zeros((10, 12, 12), dtype=bool)
    ref = np.zeros_like(pred)
    pred[2, 3, 4] = True
    ref[5, 7, 4] = True  # 3 slices and 4 rows apart
    expected = math.hypot(3 * 4.0, 4 * 0.52)
    got = metrics.all_metrics(pred, ref, PAPER_SPACING)
    assert got["hd95_mm"] == pytest.approx(expected, rel=1e-12)
    assert got["hd95_surface_mm"] == pytest.approx(expected, rel=1e-12)
    assert got["hd_mm"] == pytest.approx(expected, rel=1e-12)
    assert got["assd_mm"] == pytest.approx(expected, rel=1e-12)
    assert got["dice"] == 0.0 and got["vs"] == 1.0


@pytest.mark.parametrize("axis, spacing", [(0, (0.5, 4.0, 4.0)), (1, PAPER_SPACING), (2, PAPER_SPACING)])
def test_cube_shifted_by_one_voxel(axis, spacing):
    """A cube of side n and the same cube shifted one voxel along an axis.

    Surface (face connectivity) = the cube's shell, n^3 - (n-2)^3 voxels. Directed from
    the original: its trailing face (n^2 voxels, outside the shifted cube) and the
    interior of its leading face ((n-2)^2 voxels, inside the shifted cube but not on its
    shell) are one step away; every other shell voxel lies on the other shell (0). So
    HD95 = HD = one step along the axis, ASSD = step * (n^2 + (n-2)^2) / shell,
    Dice = (n-1)/n, VS = 1. (The shift axis has the smallest spacing, so no leading-face
    voxel is nearer to a side wall of the shifted cube than one step.)
    """
    step_mm = spacing[axis]
    n = 10
    pred = np.zeros((16, 16, 16), dtype=bool)
    pred[3:3 + n, 3:3 + n, 3:3 + n] = True
    ref = np.roll(pred, 1, axis=axis)
    shell = n ** 3 - (n - 2) ** 3
    got = metrics.all_metrics(pred, ref, spacing)
    assert got["hd95_surface_mm"] == pytest.approx(step_mm, rel=1e-12)
    assert got["hd95_mm"] == pytest.approx(step_mm, rel=1e-12)  # the two faces that differ, one step away
    assert got["hd_mm"] == pytest.approx(step_mm, rel=1e-12)
    assert got["assd_mm"] == pytest.approx(step_mm * (n ** 2 + (n - 2) ** 2) / shell, rel=1e-12)
    assert got["dice"] == pytest.approx((n - 1) / n, rel=1e-12)
    assert got["vs"] == 1.0


def test_surface_hd95_is_the_larger_directed_percentile():
    """A tube and the tube plus a far blob covering 10 % of the prediction's surface: the
    blob's distances dominate the pred->ref 95th percentile, not ref->pred's."""
    rng = np.random.default_rng(11)
    ref = nerve_like(rng, (12, 60, 60), radius=6, jitter=0, drift=(0, 0))
    pred = ref.copy()
    pred[2:8, 2:6, 2:6] = True
    d = metrics.surface_distances(pred, ref, PAPER_SPACING)
    p_pred, p_ref = np.percentile(d.pred_to_ref, 95), np.percentile(d.ref_to_pred, 95)
    assert p_ref == 0.0 and p_pred > 5.0
    assert metrics.hd95_surface(pred, ref, PAPER_SPACING) == pytest.approx(p_pred)
    assert metrics.hd95_surface(ref, pred, PAPER_SPACING) == pytest.approx(p_pred)  # symmetric
    # medpy's hd95 takes the 95th percentile of both directions pooled, which is lower here
    assert medpy_binary.hd95(pred, ref, PAPER_SPACING) < p_pred


@pytest.mark.parametrize("empty", ["pred", "ref"])
def test_one_empty_mask(empty):
    rng = np.random.default_rng(1)
    mask = nerve_like(rng, (6, 30, 30), radius=4)
    nothing = np.zeros_like(mask)
    pred, ref = (nothing, mask) if empty == "pred" else (mask, nothing)
    got = metrics.all_metrics(pred, ref, PAPER_SPACING)
    assert got == {"dice": 0.0, "hd95_mm": math.inf, "hd95_surface_mm": math.inf, "hd_mm": math.inf,
                   "assd_mm": math.inf, "vs": 0.0}
    assert metrics.hd95_surface(pred, ref, PAPER_SPACING) == math.inf
    assert metrics.hd95_evaluatesegmentation(pred, ref, PAPER_SPACING) == math.inf
    assert paper_hd95_brute_force(pred, ref, PAPER_SPACING) == math.inf
    assert metrics.hausdorff(pred, ref, PAPER_SPACING) == math.inf
    assert metrics.assd(pred, ref, PAPER_SPACING) == math.inf


def test_both_empty():
    nothing = np.zeros((6, 30, 30), dtype=bool)
    got = metrics.all_metrics(nothing, nothing, PAPER_SPACING)
    assert got == {"dice": 1.0, "hd95_mm": 0.0, "hd95_surface_mm": 0.0, "hd_mm": 0.0, "assd_mm": 0.0, "vs": 1.0}


def test_volume_similarity_and_dice_definitions():
    pred = np.zeros(100, dtype=bool)
    ref = np.zeros(100, dtype=bool)
    pred[:10] = True
    ref[5:35] = True  # 30 voxels, 5 shared
    assert metrics.volume_similarity(pred, ref) == pytest.approx(1 - 20 / 40)
    assert metrics.dice(pred, ref) == pytest.approx(2 * 5 / 40)
    disjoint = np.roll(pred, 50)
    assert metrics.volume_similarity(pred, disjoint) == 1.0 and metrics.dice(pred, disjoint) == 0.0


def test_integer_masks_equal_boolean_masks_and_2d_works():
    rng = np.random.default_rng(2)
    pred, ref = rng.random((20, 25)) < 0.4, rng.random((20, 25)) < 0.4
    as_bool = metrics.all_metrics(pred, ref, (0.52, 0.52))
    assert metrics.all_metrics(pred.astype(np.uint8), ref.astype(np.int16), (0.52, 0.52)) == as_bool
    assert_matches(as_bool, medpy_reference(pred, ref, (0.52, 0.52)))


def test_spacing_order_is_z_y_x():
    """A shift along axis 0 (z) costs 4.0 mm, along axis 2 (x) 0.52 mm."""
    pred = np.zeros((8, 8, 8), dtype=bool)
    pred[4, 4, 4] = True
    for hd95 in (metrics.hd95_surface, metrics.hd95_evaluatesegmentation):
        assert hd95(pred, np.roll(pred, 1, axis=0), PAPER_SPACING) == pytest.approx(4.0)
        assert hd95(pred, np.roll(pred, 1, axis=2), PAPER_SPACING) == pytest.approx(0.52)


def test_bad_arguments_are_refused():
    a = np.zeros((4, 4, 4), dtype=bool)
    a[1, 1, 1] = True
    with pytest.raises(ValueError, match="shape"):
        metrics.dice(a, a[:3])
    for hd95 in (metrics.hd95_surface, metrics.hd95_evaluatesegmentation):
        with pytest.raises(ValueError, match="2 values for 3-D"):
            hd95(a, a, (0.52, 0.52))
        with pytest.raises(ValueError, match="positive"):
            hd95(a, a, (4.0, 0.0, 0.52))


def test_returns_python_floats():
    """Plain floats (not numpy scalars): safe to format and to write on NumPy >= 2."""
    rng = np.random.default_rng(4)
    got = metrics.all_metrics(rng.random((5, 9, 9)) < 0.5, rng.random((5, 9, 9)) < 0.5, PAPER_SPACING)
    assert all(type(v) is float for v in got.values())


# ---------------------------------------------------------------- the paper's HD95 (EvaluateSegmentation)

@pytest.mark.parametrize("seed", range(8))
def test_paper_hd95_matches_the_brute_force_definition_on_random_masks(seed):
    rng = np.random.default_rng(200 + seed)
    shape = tuple(int(s) for s in rng.integers(3, 11, size=3))
    spacing = tuple(float(s) for s in rng.uniform(0.3, 5.0, size=3))
    pred = rng.random(shape) < rng.uniform(0.02, 0.5)
    ref = rng.random(shape) < rng.uniform(0.02, 0.5)
    pred.flat[0] = ref.flat[-1] = True  # never empty; masks reach opposite corners of the array
    expected = paper_hd95_brute_force(pred, ref, spacing)
    assert metrics.hd95_evaluatesegmentation(pred, ref, spacing) == pytest.approx(expected, rel=1e-12)
    assert metrics.hd95_evaluatesegmentation(ref, pred, spacing) == pytest.approx(expected, rel=1e-12)
    assert metrics.all_metrics(pred, ref, spacing)["hd95_mm"] == pytest.approx(expected, rel=1e-12)


def test_paper_hd95_two_single_voxels_and_one_listed_voxel():
    pred = np.zeros((6, 10, 10), dtype=bool)
    ref = np.zeros_like(pred)
    pred[1, 2, 3] = True
    ref[4, 2, 8] = True  # listed: both voxels, each at the same distance
    expected = math.hypot(3 * 4.0, 5 * 0.52)
    assert metrics.hd95_evaluatesegmentation(pred, ref, PAPER_SPACING) == pytest.approx(expected, rel=1e-12)
    both = pred | ref
    assert metrics.hd95_evaluatesegmentation(both, ref, PAPER_SPACING) == pytest.approx(expected, rel=1e-12)
    assert metrics.hd95_evaluatesegmentation(both, both, PAPER_SPACING) == 0.0  # identical: nothing listed


@pytest.mark.parametrize("axis, shift", [(2, 1), (2, 3), (1, 2), (0, 1)])
def test_paper_hd95_of_a_box_shifted_by_k_voxels(axis, shift):
    """A box of side n and the same box shifted k voxels: each of the 2k slabs that differ holds
    n^2 voxels, the j-th slab (both directions) at j steps; so the pooled sorted list holds each
    distance j*step 2*n^2 times and element i is step * (i // (2 n^2) + 1)."""
    n = 6
    pred = np.zeros((14, 14, 14), dtype=bool)
    pred[2:2 + n, 2:2 + n, 2:2 + n] = True
    ref = np.roll(pred, shift, axis=axis)
    count = 2 * shift * n * n
    index = int(0.95 * (count - 1))
    expected = PAPER_SPACING[axis] * (index // (2 * n * n) + 1)
    assert metrics.hd95_evaluatesegmentation(pred, ref, PAPER_SPACING) == pytest.approx(expected, rel=1e-12)
    assert paper_hd95_brute_force(pred, ref, PAPER_SPACING) == pytest.approx(expected, rel=1e-12)


def test_paper_hd95_of_nested_boxes():
    """Only the shell between the boxes is listed, each shell voxel with its distance to the inner box."""
    outer = np.zeros((9, 16, 16), dtype=bool)
    outer[1:8, 2:14, 3:14] = True
    inner = np.zeros_like(outer)
    inner[3:6, 5:11, 6:10] = True
    expected = paper_hd95_brute_force(outer, inner, PAPER_SPACING)
    assert expected > 4.0  # a shell voxel two slices above the inner box is 8 mm away
    assert metrics.hd95_evaluatesegmentation(outer, inner, PAPER_SPACING) == pytest.approx(expected, rel=1e-12)
    assert metrics.hd95_evaluatesegmentation(inner, outer, PAPER_SPACING) == pytest.approx(expected, rel=1e-12)


def test_one_voxel_boundary_changes_give_one_in_plane_step():
    """One rater = another with about 1 % of the boundary moved by one in-plane voxel: every
    listed voxel is 0.52 mm from the other mask, so the paper's HD95 is 0.52 mm, while the
    surface HD95 (95th percentile of mostly zero surface distances) stays 0."""
    rng = np.random.default_rng(21)
    first = nerve_like(rng, (12, 48, 48), radius=9, jitter=0, drift=(0, 0))
    second = first.copy()
    boundary = np.argwhere(first & ~ndimage.binary_erosion(first, ndimage.generate_binary_structure(3, 1)))
    moved = boundary[rng.choice(len(boundary), size=max(1, len(boundary) // 100), replace=False)]
    for z, y, x in moved:
        if not first[z, y, x + 1]:
            second[z, y, x + 1] = True   # grown by one voxel along x
        else:
            second[z, y, x] = False      # shrunk: the voxel's inner neighbour along x stays
    assert (first != second).any()
    got = metrics.hd95_evaluatesegmentation(first, second, PAPER_SPACING)
    assert got == pytest.approx(0.52, rel=1e-12)
    assert got == pytest.approx(paper_hd95_brute_force(first, second, PAPER_SPACING), rel=1e-12)
    assert metrics.hd95_surface(first, second, PAPER_SPACING) == 0.0


def test_a_distant_false_positive_dominates_the_paper_hd95_not_the_surface_hd95():
    """The paper's Figure 4B error: a nerve segmented correctly plus a small blob (a vein) 20 mm
    away. Only the blob's voxels are listed, so the paper's HD95 is the blob's distance; among
    thousands of surface distances of the nerve it vanishes below the 95th percentile."""
    rng = np.random.default_rng(5)
    ref = nerve_like(rng, (10, 96, 128), radius=10, jitter=0.3, drift=(0, 0))
    pred = ref.copy()
    centre_x = int(np.argwhere(ref[5])[:, 1].max()) + int(round(20 / 0.52))
    pred[5, 47:50, centre_x:centre_x + 3] = True
    got = metrics.hd95_evaluatesegmentation(pred, ref, PAPER_SPACING)
    expected = paper_hd95_brute_force(pred, ref, PAPER_SPACING)
    assert got == pytest.approx(expected, rel=1e-12)
    assert 19.5 < got < 22.0
    assert metrics.hd95_surface(pred, ref, PAPER_SPACING) < 0.6


def test_paper_hd95_bounding_box_gives_the_full_array_distances():
    """Masks in a corner of a large array: the distances on the joint box equal the full array's."""
    rng = np.random.default_rng(8)
    pred, ref = np.zeros((30, 120, 140), dtype=bool), np.zeros((30, 120, 140), dtype=bool)
    pred[20:26, 90:110, 100:130] = nerve_like(rng, (6, 20, 30), radius=6)
    ref[18:24, 95:115, 105:135] = nerve_like(rng, (6, 20, 30), radius=5)
    sampling = np.array(PAPER_SPACING)
    full = np.concatenate([ndimage.distance_transform_edt(~ref, sampling=sampling)[pred & ~ref],
                           ndimage.distance_transform_edt(~pred, sampling=sampling)[ref & ~pred]])
    boxed = metrics.differing_voxel_distances(pred, ref, PAPER_SPACING)
    np.testing.assert_allclose(np.sort(boxed), np.sort(full), rtol=0, atol=1e-12)
