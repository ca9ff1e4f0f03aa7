"""The subject's own lesion references (nnunet_nerve/biomarkers/references.py) on masks whose
answers are known: the noise estimators by hand, a lesion over half the trunk, a branch
swollen over most of its length, a branch on too few slices of its own."""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import run, script
from nerve_tubes import SHAPE, SPACING, t2_image, tube, write
from nnunet_nerve.biomarkers.measures import LesionRule, nerve_biomarkers
from nnunet_nerve.biomarkers.references import MAD_TO_SD, jitter_noise, slice_noise

NZ = SHAPE[0]


def slice_of(z_mm: float) -> int:
    return int(z_mm // SPACING[0])


def radius_of(area_mm2: float) -> float:
    return math.sqrt(area_mm2 / math.pi)


def segments(res) -> list:
    return [(s["first_slice"], s["last_slice"]) for s in res.summary["lesion"]["segments"]]


def test_noise_from_second_differences_ignores_a_steady_trend():
    """A linear taper is no noise; alternating +-1 around a line: second differences of 4 in
    size, so 1.4826 x 4 / sqrt(6); two values: the first difference; one value: nan."""
    assert slice_noise([10.0, 12.0, 14.0, 16.0, 18.0]) == 0.0
    wobble = [10.0 + 2 * i + (1 if i % 2 else -1) for i in range(7)]
    assert slice_noise(wobble) == pytest.approx(MAD_TO_SD * 4 / math.sqrt(6))
    assert slice_noise([3.0, 5.0]) == pytest.approx(MAD_TO_SD * 2 / math.sqrt(2))
    assert math.isnan(slice_noise([3.0]))
    # pooled jitter: |second difference| / sqrt(value), over every profile with three values or more
    ratios = [4 / math.sqrt(100.0), 4 / math.sqrt(100.0), 2 / math.sqrt(25.0)]
    assert jitter_noise([[98.0, 100.0, 98.0, 100.0], [25.0, 25.0, 27.0], [7.0, 9.0]]) == \
        pytest.approx(MAD_TO_SD * float(np.median(ratios)) / math.sqrt(6))
    assert math.isnan(jitter_noise([[1.0, 2.0], []]))


def test_a_lesion_over_half_of_the_trunk_is_found_to_its_flanks():
    """A trunk of 50 mm² (r 4) swollen to 95 mm² on slices 12-27 with 66 mm² flanks on 8-11 and
    28-31: the first pass's median (66 mm², a flank) finds only the core; without it the
    centre is the normal trunk and the flanks (+32 %) are above threshold (extent
    ``threshold``: they are part of the segment). Their excess (16 mm²) is under half the
    peak's (45 mm²): the lesion's full width at half maximum, the default extent, is the core."""
    def radius(z):
        k = slice_of(z)
        return 5.5 if 12 <= k <= 27 else 4.6 if 8 <= k <= 31 else 4.0

    mask = tube((24.0, 24.0), radius)
    res = nerve_biomarkers(mask, SPACING, rule=LesionRule(extent="threshold"))
    lesion = res.summary["lesion"]
    assert segments(res) == [(8, 31)]
    assert lesion["reference_passes"] >= 2
    assert lesion["references"]["sciatic"]["csa_centre_mm2"] == pytest.approx(math.pi * 16, rel=0.03)
    half = nerve_biomarkers(mask, SPACING)
    assert segments(half) == [(12, 27)] and half.summary["lesion"]["reference_passes"] == lesion["reference_passes"]
    assert [r["slice"] for r in half.slices if r["lesion"]] == list(range(12, 28))


def test_a_lesion_extends_over_its_full_width_at_half_maximum():
    """A trunk of 50 mm² swollen by 30, 70, 100, 120, 100, 70, 30 % on slices 14-20. All seven
    are above the threshold (centre + 20 %); half the peak's excess is 60 %, so the lesion is
    slices 15-19, flagged with their CSA criterion, and burden 5 / 40 (extent ``threshold``:
    14-20)."""
    def profile(excess: dict):
        return lambda z: radius_of(50.0 * (1 + excess.get(slice_of(z), 0.0)))

    bump = {14: 0.3, 15: 0.7, 16: 1.0, 17: 1.2, 18: 1.0, 19: 0.7, 20: 0.3}
    res = nerve_biomarkers(tube((24.0, 24.0), profile(bump)), SPACING)
    assert segments(res) == [(15, 19)]
    assert [r["slice"] for r in res.slices if r["lesion"]] == [15, 16, 17, 18, 19]
    assert all(res.slices[z]["csa_lesion"] for z in range(15, 20))
    assert res.summary["lesion"]["burden"] == pytest.approx(5 / NZ)
    assert segments(nerve_biomarkers(tube((24.0, 24.0), profile(bump)), SPACING,
                                     rule=LesionRule(extent="threshold"))) == [(14, 20)]


def test_a_lesion_across_the_division_measures_each_region_against_its_own_peak():
    """A trunk of 50 mm² (r 4) on slices 0-19 dividing into a tibial of 28 mm² (r 3) and a
    peroneal of 12.6 mm² (r 2); the trunk swollen to 95 mm² (r 5.5) on 18-19 and 66 mm² (r 4.6)
    on 16-17, the tibial to 50 mm² (r 4) on 20-22. Each region's half maximum is its own: the
    trunk's (72 mm²) leaves its flank 16-17 out, the tibial's takes 20-22; the lesion is 18-22,
    trunk and tibial (extent ``threshold``: 16-22)."""
    trunk = lambda z: 5.5 if slice_of(z) >= 18 else 4.6 if slice_of(z) >= 16 else 4.0  # noqa: E731
    res = nerve_biomarkers(y_nerve(20, trunk, lambda z: 4.0 if slice_of(z) <= 22 else 3.0), SPACING)
    assert segments(res) == [(18, 22)]
    assert res.summary["lesion"]["segments"][0]["regions"] == ["sciatic", "tibial"]
    assert segments(nerve_biomarkers(y_nerve(20, trunk, lambda z: 4.0 if slice_of(z) <= 22 else 3.0), SPACING,
                                     rule=LesionRule(extent="threshold"))) == [(16, 22)]


def y_nerve(split: int, trunk_r, tibial_r, peroneal_r=2.0):
    """A trunk (x = 24 mm) on slices 0..split-1 dividing into a tibial (x = 19) and a peroneal
    (x = 30) branch from slice ``split``, each touching the trunk's last slice."""
    mask = tube((24.0, 24.0), trunk_r)
    branches = tube((19.0, 24.0), tibial_r) | tube((30.0, 24.0), peroneal_r)
    mask[split:] = branches[split:]
    return mask


def test_a_branch_swollen_over_most_of_its_length_is_compared_with_the_trunk():
    """The tibial (normally 28 mm², r 3) swollen to 64 mm² (r 4.5) on 18 of its 20 slices: its
    own median (64 mm²) exceeds the trunk's 50 mm², so its CSA centre is capped at the trunk's
    and the swelling is a lesion; the peroneal keeps its own reference."""
    mask = y_nerve(20, 4.0, lambda z: 4.5 if slice_of(z) >= 22 else 3.0)
    res = nerve_biomarkers(mask, SPACING)
    refs = res.summary["lesion"]["references"]
    assert refs["tibial"]["csa_centre_mm2"] == refs["sciatic"]["csa_centre_mm2"]
    assert "capped at the trunk's" in refs["tibial"]["label"] and refs["peroneal"]["label"] == "subject peroneal"
    assert segments(res) == [(22, NZ - 1)]
    assert res.summary["lesion"]["segments"][0]["regions"] == ["tibial"]


def test_a_short_trunk_swollen_over_most_of_its_length_is_compared_with_its_branches():
    """A trunk on slices 0-9 dividing into a tibial of 28 mm² (r 3) and a peroneal of 12.6 mm²
    (r 2), 41 mm² together; the trunk is 41 mm² (r 3.6) on slices 0-1 and swollen to 79 mm²
    (r 5) on 2-9. Its own median is the swelling (79 mm²), so against itself the trunk holds
    no lesion; it exceeds 1.2 x the branches' 41 mm², so the trunk's CSA centre is capped
    there (49 mm²) and slices 2-9 are the lesion. A trunk the size of its branches together
    keeps its own centre."""
    mask = y_nerve(10, lambda z: 5.0 if slice_of(z) >= 2 else 3.6, 3.0)
    res = nerve_biomarkers(mask, SPACING)
    refs = res.summary["lesion"]["references"]
    branches = refs["tibial"]["csa_centre_mm2"] + refs["peroneal"]["csa_centre_mm2"]
    assert branches == pytest.approx(math.pi * (9 + 4), rel=0.05)
    assert refs["sciatic"]["csa_centre_mm2"] == pytest.approx(1.2 * branches)
    assert "capped at 1.2 x the branches' together" in refs["sciatic"]["label"]
    assert segments(res) == [(2, 9)]
    assert res.summary["lesion"]["segments"][0]["regions"] == ["sciatic"]
    normal = nerve_biomarkers(y_nerve(10, 3.6, 3.0), SPACING).summary["lesion"]
    assert normal["references"]["sciatic"]["label"] == "subject sciatic" and normal["segments"] == []


def test_a_branch_on_too_few_slices_is_judged_against_the_trunk():
    """Branches on the last 4 slices only (fewer than 5: no reference of their own): they are
    compared with the trunk's, so a tibial of 79 mm² (r 5, above the trunk's 50 mm² + 20 %) is
    a lesion and no slice goes unjudged; a normal-sized branch is no lesion."""
    swollen = nerve_biomarkers(y_nerve(36, 4.0, 5.0), SPACING)
    lesion = swollen.summary["lesion"]
    assert lesion["unjudged_slices"] == []
    assert segments(swollen) == [(36, NZ - 1)]
    assert lesion["references"]["tibial"]["label"].startswith("subject sciatic (tibial: fewer than 5 slices")
    normal = nerve_biomarkers(y_nerve(36, 4.0, 3.0), SPACING)
    assert segments(normal) == [] and normal.summary["lesion"]["unjudged_slices"] == []


def test_interpolated_slices_are_no_evidence_for_a_lesion():
    """A trunk of 50 mm² (r 4) at 95 mm² (r 5.5) on slices 20-21. Measured, that is a lesion
    segment; the same two slices interpolated by post-processing (``interpolated``: not
    measurements) make none, and neither does one measured swollen slice with an interpolated
    one beside it (both listed as isolated). A lesion on 16-23 measured on both sides of an
    interpolated slice 20 stays one segment."""
    short = tube((24.0, 24.0), lambda z: 5.5 if 20 <= slice_of(z) <= 21 else 4.0)
    assert segments(nerve_biomarkers(short, SPACING)) == [(20, 21)]
    for interpolated in ([20, 21], [21]):
        res = nerve_biomarkers(short, SPACING, interpolated=interpolated)
        assert segments(res) == [] and res.summary["lesion"]["isolated_slices"] == [20, 21]
        assert [r["slice"] for r in res.slices if r["interpolated"]] == interpolated
    long = tube((24.0, 24.0), lambda z: 5.5 if 16 <= slice_of(z) <= 23 else 4.0)
    res = nerve_biomarkers(long, SPACING, interpolated=[20])
    assert segments(res) == [(16, 23)] and res.slices[20]["lesion"]


def _two_bumps(second_first: int, missing=()):
    """A trunk of 50 mm² with a lesion swollen by 50, 90, 120, 120, 90, 50 % on slices 10-15
    (full width at half maximum 11-14) and a second swelling of 40 % on the two slices from
    ``second_first``; ``missing``: slices without nerve."""
    excess = {10: 0.5, 11: 0.9, 12: 1.2, 13: 1.2, 14: 0.9, 15: 0.5, second_first: 0.4, second_first + 1: 0.4}
    mask = tube((24, 24), lambda z: radius_of(50.0 * (1 + excess.get(slice_of(z), 0.0))))
    mask[list(missing)] = False
    return mask


def test_a_short_swelling_close_to_a_lesion_is_its_tail_not_a_second_lesion():
    """One swelling, one lesion (LesionRule.min_separation, default 4): the second swelling on
    slices 18-19 is 3 nerve slices (15-17) from the lesion's half-maximum extent 11-14, so it is
    the same swelling crossing the threshold again: not flagged, listed in secondary_segments.
    Four slices apart (19-20), a slice without nerve between them (17), or min_separation 1:
    two lesions."""
    res = nerve_biomarkers(_two_bumps(18), SPACING)
    assert segments(res) == [(11, 14)]
    assert res.summary["lesion"]["secondary_segments"] == [[18, 19]]
    assert not res.lesion_slices[18:20].any() and res.summary["lesion"]["burden"] == pytest.approx(4 / NZ)
    assert "fewer than 4 nerve slice(s) apart one lesion" in res.summary["lesion"]["rule"]
    assert segments(nerve_biomarkers(_two_bumps(19), SPACING)) == [(11, 14), (19, 20)]
    assert segments(nerve_biomarkers(_two_bumps(18, missing=[17]), SPACING)) == [(11, 14), (18, 19)]
    every = nerve_biomarkers(_two_bumps(18), SPACING, rule=LesionRule(min_separation=1))
    assert segments(every) == [(11, 14), (18, 19)] and every.summary["lesion"]["secondary_segments"] == []
    # the threshold's extent keeps every segment: the rule is about half-maximum extents
    assert segments(nerve_biomarkers(_two_bumps(18), SPACING, rule=LesionRule(extent="threshold"))) \
        == [(10, 15), (18, 19)]


def test_min_lesion_separation_through_the_cli(tmp_path):
    import json

    mask = _two_bumps(18)
    image, path = write(tmp_path / "t2.nii.gz", t2_image(mask)), write(tmp_path / "mask.nii.gz", mask)
    for option, expected in (((), [[11, 14]]), (("--min-lesion-separation", "1"), [[11, 14], [18, 19]])):
        out = tmp_path / f"out{len(option)}"
        run([script("nnunet-nerve"), "biomarkers", "--image", str(image), "--mask", str(path), "--out", str(out),
             *option], timeout=300)
        lesion = json.loads((out / "summary.json").read_text())["lesion"]
        assert [[g["first_slice"], g["last_slice"]] for g in lesion["segments"]] == expected
