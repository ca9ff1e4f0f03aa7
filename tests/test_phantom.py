"""The synthetic registry: layout, geometry, determinism, and that it looks like the paper's data
(tissue contrasts, the nerve splitting distally, lesions, raters who differ like real raters)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from conftest import run, script
from nnunet_nerve.registry import phantom as P
from nnunet_nerve.registry import phantom_anatomy as A
from nnunet_nerve.registry.consensus import majority_vote
from nnunet_nerve.registry.dataset_info import read_participants
from nnunet_nerve.registry.reader import image_path, mask_path
from nnunet_nerve.registry.validation import check_registry

SMALL = A.SIZES["small"]


def dice(a, b) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.fixture(scope="module")
def rendered():
    """A few small subjects rendered in memory: (subject, image, rater masks, truth)."""
    subjects = A.phantom_subjects(4, 8, SMALL, seed=0)
    return [(s, *P.render_subject(s, SMALL, 0, i)) for i, s in enumerate(subjects)]


def test_registry_layout_geometry_and_validity(tmp_path):
    out = P.write_phantom_registry(tmp_path / "reg", volunteers=2, patients=3, seed=4, log=None)
    registry = check_registry(out)
    assert registry.participant_ids == ["sub-001", "sub-002", "sub-003", "sub-004", "sub-005"]
    assert registry.raters == list(A.RATERS) == ["OS", "BW", "AB"]  # raters.tsv: most experienced first
    assert (out / "raters.tsv").read_text() == "rater_id\texperience_rank\nOS\t1\nBW\t2\nAB\t3\n"
    rows = read_participants(out / "participants.tsv")
    assert [r.cohort for r in rows] == ["volunteer"] * 2 + ["patient"] * 3
    assert all(r.location in ("distal", "medial") for r in rows[:2])
    assert all(r.location in ("distal", "medial", "proximal") for r in rows)
    assert set(rows[0].extra) == {"age", "sex", "lesion", "lesion_first_slice", "lesion_last_slice"}
    assert [r.extra["lesion"] for r in rows[:2]] == ["none", "none"]
    assert all(r.extra["lesion"] in ("focal", "extended") for r in rows[2:])
    assert all(r.extra["lesion_first_slice"] == r.extra["lesion_last_slice"] == "n/a" for r in rows[:2])
    assert all(0 <= int(r.extra["lesion_first_slice"]) <= int(r.extra["lesion_last_slice"]) < SMALL.shape_xyz[2]
               for r in rows[2:])
    image = sitk.ReadImage(str(image_path(out, "sub-003")))
    assert image.GetSize() == SMALL.shape_xyz and image.GetPixelID() == sitk.sitkInt16
    assert image.GetSpacing() == pytest.approx(SMALL.spacing_xyz)
    assert image.GetDirection() == (1, 0, 0, 0, 1, 0, 0, 0, 1)
    mask = sitk.ReadImage(str(mask_path(out, "sub-003", "OS")))
    assert mask.GetPixelID() == sitk.sitkUInt8 and mask.GetOrigin() == image.GetOrigin()
    assert set(np.unique(sitk.GetArrayViewFromImage(mask))) == {0, 1}


def test_deterministic_for_a_seed(tmp_path):
    a = P.write_phantom_registry(tmp_path / "a", volunteers=1, patients=1, seed=3, log=None)
    b = P.write_phantom_registry(tmp_path / "b", volunteers=1, patients=1, seed=3, log=None)
    c = P.write_phantom_registry(tmp_path / "c", volunteers=1, patients=1, seed=4, log=None)
    for pid in ("sub-001", "sub-002"):
        arrays = [sitk.GetArrayFromImage(sitk.ReadImage(str(image_path(r, pid)))) for r in (a, b, c)]
        np.testing.assert_array_equal(arrays[0], arrays[1])
        assert not np.array_equal(arrays[0], arrays[2])
        for rater in A.RATERS:
            np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path(a, pid, rater)))),
                                          sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path(b, pid, rater)))))
    assert (a / "participants.tsv").read_text() == (b / "participants.tsv").read_text()


def test_subjects_do_not_depend_on_the_cohort_sizes():
    # Subject i is drawn from (seed, i): adding patients does not change the volunteers.
    few = A.phantom_subjects(2, 1, SMALL, 0)
    many = A.phantom_subjects(2, 5, SMALL, 0)
    assert few[0].thigh_a == many[0].thigh_a and few[1].nerve_uv == many[1].nerve_uv


def test_tissue_contrast_of_a_t2_tse_without_fat_suppression(rendered):
    for s, image, masks, truth in rendered:
        x, y = np.meshgrid((np.arange(144) - 71.5) * 1.25, (np.arange(128) - 63.5) * 1.25)
        mid = image.shape[0] // 2
        sl = image[mid].astype(float)
        air = sl[:5, :5].mean()
        nerve = sl[truth[mid] > 0].mean()
        z = s.z_start + mid * 4.0
        a = s.thigh_a * SMALL.anatomy_scale * A.thigh_taper(z)
        thigh = sl[np.hypot((x - s.center[0]) / a, (y - s.center[1]) / (0.85 * a)) < 0.9]
        fat = np.percentile(thigh, 90)  # the brightest tenth of the thigh: subcutaneous and septal fat
        femur_centre = sl[(np.hypot(x - s.center[0] + 0.06 * a, y - s.center[1] + 0.12 * a * 0.87) < 4)].mean()
        muscle = np.median(sl[(sl > 0.15 * fat) & (sl < 0.5 * fat)])
        assert air < 0.1 * fat
        assert muscle < nerve < fat, (s.participant_id, muscle, nerve, fat)
        assert femur_centre > 0.7 * fat  # bright fatty marrow


def test_nerve_splits_into_tibial_and_peroneal_in_distal_stacks(rendered):
    distal = [(s, t) for s, _, _, t in rendered if s.location == "distal"]
    others = [(s, t) for s, _, _, t in rendered if s.location != "distal"]
    assert distal and others
    for s, truth in distal:
        assert ndimage.label(truth[0])[1] == 2, s.participant_id  # below the split: two branches
        assert ndimage.label(truth[-1])[1] == 1, s.participant_id  # above it: one sciatic nerve
    for s, truth in others:
        assert all(ndimage.label(sl)[1] == 1 for sl in truth), s.participant_id
    for s, truth in distal + others:
        assert truth.any(axis=(1, 2)).all()  # the nerve runs through the whole stack


def test_nerve_is_small_and_lesions_make_it_thicker_and_brighter(rendered):
    volunteers = [(img, t) for s, img, _, t in rendered if s.cohort == "volunteer"]
    focal = [(s, img, t) for s, img, _, t in rendered if s.lesion == "focal"]
    assert focal
    for _, truth in volunteers:
        assert 0.001 < truth.mean() < 0.01
    for s, image, truth in focal:
        k_lesion = int(round((s.lesion_z - s.z_start) / 4.0))
        area = truth.sum(axis=(1, 2))
        far = int(np.argmin([A.lesion_profile(s, s.z_start + 4.0 * k) for k in range(truth.shape[0])]))
        assert area[k_lesion] > 1.2 * area[far], (s.participant_id, area[k_lesion], area[far])
        bright_lesion = image[k_lesion][truth[k_lesion] > 0].mean()
        bright_far = image[far][truth[far] > 0].mean()
        assert bright_lesion > bright_far
        # the recorded extent is the full width at half maximum of the swelling, inside the stack
        first, last = A.lesion_extent(s, SMALL)
        assert first <= k_lesion <= last
        swelling = np.array([A.lesion_profile(s, s.z_start + 4.0 * k) for k in range(truth.shape[0])])
        inside = np.zeros(truth.shape[0], dtype=bool)
        inside[first:last + 1] = True
        assert swelling[inside].min() >= s.lesion_amplitude / 2 > swelling[~inside].max(initial=0.0)

def test_raters_differ_like_real_raters(rendered):
    pairwise, to_truth, missed_branch = [], [], 0
    for s, _, masks, truth in rendered:
        ms = [masks[r] for r in A.RATERS]
        pairwise += [dice(ms[i], ms[j]) for i in range(3) for j in range(i + 1, 3)]
        to_truth.append(dice(majority_vote(ms), truth))
        for m in ms:
            missed_branch += sum(ndimage.label(m[k])[1] < ndimage.label(truth[k])[1] for k in range(len(truth)))
    assert 0.8 <= np.mean(pairwise) <= 0.93, np.mean(pairwise)
    assert min(pairwise) > 0.6
    assert np.mean(to_truth) > 0.9
    assert missed_branch > 0  # a small branch missed on some slices


def test_some_patients_have_motion_ghosts(rendered):
    ghosted = [(s, img) for s, img, _, _ in rendered if s.ghosting > 0]
    clean = [(s, img) for s, img, _, _ in rendered if s.ghosting == 0]
    assert ghosted and clean and all(s.cohort == "patient" for s, _ in ghosted)
    # Ghosts replicate the thigh along the phase-encoding direction (y): the air above and below it brightens.
    def air_ratio(s, img):  # air in front of the thigh / air beside it
        return img[:, :3, 50:94].astype(float).mean() / img[:, 40:90, :4].astype(float).mean()
    assert min(air_ratio(*g) for g in ghosted) > 1.15
    assert max(air_ratio(*c) for c in clean) < 1.08


def test_paper_size_grid():
    paper = A.SIZES["paper"]
    assert paper.shape_xyz[2] == 60 and paper.spacing_xyz == (0.52, 0.52, 4.0)
    np.testing.assert_allclose(np.array(paper.shape_xyz[:2]) * 0.52, [384, 330], atol=1)
    few_slices = dataclasses.replace(paper, shape_xyz=paper.shape_xyz[:2] + (3,))  # the full in-plane grid
    s = A.phantom_subjects(1, 0, few_slices, 0)[0]
    image, masks, truth = P.render_subject(s, few_slices, 0, 0)
    assert image.shape == (3, 635, 738) and image.dtype == np.int16
    assert 0.0003 < truth.mean() < 0.003  # the paper: about 0.14 % of the voxels


def test_cli_refuses_to_overwrite(tmp_path):
    out = tmp_path / "reg"
    run([script("nnunet-nerve"), "phantom", str(out), "--volunteers", "1", "--patients", "0"])
    stamp = (out / "participants.tsv").stat().st_mtime_ns
    again = run([script("nnunet-nerve"), "phantom", str(out), "--volunteers", "1", "--patients", "1"], check=False)
    assert again.returncode == 2
    assert again.stderr.strip() == f"error: {out}: registry folder already exists; pass --overwrite to replace it"
    assert (out / "participants.tsv").stat().st_mtime_ns == stamp
    run([script("nnunet-nerve"), "phantom", str(out), "--volunteers", "1", "--patients", "1", "--overwrite"])
    assert len(read_participants(out / "participants.tsv")) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reg"]
