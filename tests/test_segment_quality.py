"""The quality flags of `segment`'s report, on masks whose answer is known by construction."""
from __future__ import annotations

import numpy as np

from nnunet_nerve.biomarkers.measures import NormativeReference, nerve_biomarkers
from nnunet_nerve.biomarkers.postprocess import postprocess_nerve
from nnunet_nerve.segmentation.quality import quality_flags

SPACING = (4.0, 1.0, 1.0)


def _flags(mask, **kwargs) -> dict:
    return {f.name: f for f in quality_flags(mask, SPACING, **kwargs)}


def _tube(shape=(8, 40, 40), side: int = 5, at=(15, 15)) -> np.ndarray:
    """A straight square tube through every slice: CSA = side² mm² (1 x 1 mm pixels)."""
    mask = np.zeros(shape, dtype=bool)
    mask[:, at[0]:at[0] + side, at[1]:at[1] + side] = True
    return mask


def test_no_nerve_is_raised_only_for_an_empty_mask():
    assert _flags(np.zeros((4, 10, 10), dtype=bool))["no_nerve"].raised
    flag = _flags(_tube())["no_nerve"]
    assert not flag.raised and "8 of 8 slices" in flag.message


def test_field_of_view_edge_names_the_slices_touching_the_in_plane_edge():
    mask = _tube()
    assert not _flags(mask)["field_of_view_edge"].raised  # runs through the first and last slice: expected
    mask[2, 0, 20] = True       # first row
    mask[5, 18, 39] = True      # last column
    flag = _flags(mask)["field_of_view_edge"]
    assert flag.raised and "2 slice(s) (2, 5)" in flag.message


def test_postprocessing_reports_what_it_removed():
    mask = _tube()
    blob = np.zeros_like(mask)
    blob[3:5, 30:33, 2:4] = True  # a short blob far from the tube: 2 x 3 x 2 = 12 voxels
    result = postprocess_nerve(mask | blob, SPACING)
    flag = _flags(result.mask, postprocessing=result)["postprocessing"]
    assert flag.raised and "removed 1 of 2 component(s) (12 voxels, 48 mm³)" in flag.message
    clean = postprocess_nerve(mask, SPACING)
    assert not _flags(clean.mask, postprocessing=clean)["postprocessing"].raised
    assert "off" in _flags(mask, postprocessing=None)["postprocessing"].message


def test_postprocessing_names_a_removed_side_piece_track():
    """A tube of 100 mm² and a 9-pixel vessel one pixel beside it on slices 2-4, touching it on
    slice 5 (one 3D component): the flag counts the vessel track, not a component."""
    mask = _tube(side=10)
    vessel = np.zeros_like(mask)
    vessel[2:5, 15:18, 26:29] = True     # one pixel from the tube's edge (x 15-24)
    vessel[5, 15:18, 25:28] = True       # touching it
    result = postprocess_nerve(mask | vessel, SPACING)
    flag = _flags(result.mask, postprocessing=result)["postprocessing"]
    assert flag.raised and "removed 0 of 1 component(s) and 1 vessel track(s) (27 voxels, 108 mm³)" \
        in flag.message


def test_csa_outside_the_reference_range_counts_slices_above_and_below():
    mask = _tube(side=5)                     # 25 mm²
    for y, x in ((15, 15), (15, 19), (19, 15), (19, 19)):
        mask[1, y, x] = False                # 21 mm² (corners off, centroid kept): inside
    mask[6] = False
    mask[6, 17, 17] = True                   # 1 mm², same centroid: below
    trunk = {"cases": ["a", "b", "c"], "slices": 30, "csa_centre_mm2": 20.0, "csa_spread_mm2": 1.0,
             "signal_centre": 1.0, "signal_spread": 0.1}
    reference = NormativeReference("test", {"all": ["a", "b", "c"]}, {"all": {"sciatic": trunk}})
    # sciatic range 20 ± max(3 x 1, 0.2 x 20) = 16 .. 24: 6 slices of 25 above, slice 6 below, slice 1 inside
    biomarkers = nerve_biomarkers(mask, SPACING, reference=reference)
    flag = _flags(mask, biomarkers=biomarkers, reference=reference)["csa_reference"]
    assert flag.raised, flag.message
    assert ("6 nerve slice(s) with a part above and 1 with a part below the normative CSA range "
            "(all locations: sciatic 16.0-24.0 mm²") in flag.message
    inside = _tube(side=4)
    inside[:, 15, 19] = True                 # 17 mm² in every slice (a straight tube): inside
    biomarkers = nerve_biomarkers(inside, SPACING, reference=reference)
    assert not _flags(inside, biomarkers=biomarkers, reference=reference)["csa_reference"].raised
    assert not _flags(mask)["csa_reference"].raised


def test_geometry_is_raised_with_the_inputs_problem_and_otherwise_states_the_voxel_size():
    """`segment` passes ``io.images.default_geometry_problem`` of its input; the flag carries it."""
    assert _flags(_tube())["geometry"] == quality_flags(_tube(), SPACING)[-1]
    assert not _flags(_tube())["geometry"].raised
    assert _flags(_tube())["geometry"].message == "measured in voxels of 1 x 1 x 4 mm (x, y, z) from the header"
    flag = _flags(_tube(), geometry_problem="the header holds no geometry")["geometry"]
    assert flag.raised and flag.message == "the header holds no geometry" and flag.title == "header without geometry"


def test_cut_lengthwise_is_raised_for_a_nerve_stored_coronal_with_an_axial_header():
    """The tube cut across (8 slices of a 5 x 5 mm square) is compact; the same nerve lying in the
    slices (a 30 x 3 mm streak on 2 slices of 4 mm: 8 mm of stack) is what coronal slices stored
    without their orientation show, and the flag names the elongation and length."""
    tube = _flags(_tube())["cut_lengthwise"]
    assert not tube.raised and tube.message == "the nerve's pieces are compact on the slices it crosses"
    assert _flags(np.zeros((4, 10, 10), dtype=bool))["cut_lengthwise"].message == "no nerve to judge"
    streak = np.zeros((8, 40, 40), dtype=bool)
    streak[3:5, 5:35, 18:21] = True
    flag = _flags(streak)["cut_lengthwise"]
    assert flag.raised and flag.title == "nerve looks cut lengthwise"
    assert flag.message.startswith("the nerve looks cut lengthwise: its pieces are 10 times longer than wide and 30 mm "
                                   "long (medians over its 2 slices), longer than the 8.0 mm of stack it covers")
