"""Nerve biomarkers on masks whose answers are known, through the library and the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import read_csv, run, script
from nerve_tubes import SHAPE, SPACING, disc_area_tolerance, oblique_tube, t2_image, tube, write
from nnunet_nerve.biomarkers.measures import NormativeReference, nerve_biomarkers, track_cosines
from nnunet_nerve.errors import NerveError

NZ = SHAPE[0]
PIXEL_AREA = SPACING[1] * SPACING[2]


def cli(*args, check=True):
    return run([script("nnunet-nerve"), *map(str, args)], check=check, timeout=300)


def scan(tmp_path, mask, image=None, name="case"):
    image = t2_image(mask) if image is None else image
    return write(tmp_path / f"{name}_t2.nii.gz", image), write(tmp_path / f"{name}_mask.nii.gz", mask)


def test_cylinder_csa_is_pi_r2_within_discretisation(tmp_path):
    """A straight cylinder whose centre moves by sub-pixel amounts per slice: every slice's CSA is
    within the disc-counting bound of pi r^2, and their mean within 2 % (for a random sub-pixel
    offset the expected pixel count of a disc is exactly its area)."""
    rng = np.random.default_rng(1)
    offsets = rng.uniform(0, SPACING[2], size=(NZ, 2))
    r = 3.0
    mask = tube(lambda z: (24 + offsets[int(z // SPACING[0])][0], 24 + offsets[int(z // SPACING[0])][1]), r)
    image, mask_path = scan(tmp_path, mask)
    out = tmp_path / "out"
    proc = cli("biomarkers", "--image", image, "--mask", mask_path, "--out", out)
    assert "lesion burden 0 %" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["mip.png", "profile.png", "slices.csv", "summary.json"]
    rows = read_csv(out / "slices.csv")
    assert len(rows) == NZ
    csa = np.array([float(r_["csa_mm2"]) for r_ in rows])
    assert np.all(np.abs(csa - np.pi * r * r) <= disc_area_tolerance(r, SPACING[1:]))
    assert abs(csa.mean() - np.pi * r * r) / (np.pi * r * r) < 0.02
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nerve_found"] and summary["voxels"] == int(mask.sum())
    assert summary["volume_mm3"] == pytest.approx(mask.sum() * np.prod(SPACING))
    assert summary["volume_ml"] == pytest.approx(summary["volume_mm3"] / 1000)
    assert summary["length_mm"] == pytest.approx(NZ * SPACING[0])
    assert summary["csa_mm2"]["max"] == pytest.approx(csa.max())
    # sub-pixel wobble of a straight nerve barely tilts the smoothed centreline
    assert min(float(r_["cos_theta"]) for r_ in rows) > 0.995
    assert summary["lesion"]["burden"] == 0 and summary["lesion"]["segments"] == []
    assert not summary["split"]["found"]
    assert (out / "profile.png").read_bytes()[:4] == b"\x89PNG"


def test_an_image_without_geometry_is_measured_in_voxels_and_said_so(tmp_path):
    """A tube written with SimpleITK's defaults (1 mm voxels at origin 0: an array saved without
    its scan's geometry) is measured in those units, exit 0, but `biomarkers` prints one
    `warning:` line naming the image and summary.json lists it; the same tube with its spacing
    (the first test) has an empty `warnings`."""
    mask = tube((24, 24), 3.0)
    image = write(tmp_path / "bare_t2.nii.gz", t2_image(mask), spacing=(1.0, 1.0, 1.0))
    mask_path = write(tmp_path / "bare_mask.nii.gz", mask, spacing=(1.0, 1.0, 1.0))
    proc = cli("biomarkers", "--image", image, "--mask", mask_path, "--out", tmp_path / "out")
    expected = (f"warning: {image}: the header holds no geometry (1 mm voxels at origin 0, the defaults of an array "
                "written without its scan's geometry): areas, lengths and volumes are in voxel units unless the "
                "voxels really are 1 mm; copy the scan's geometry into the file (SimpleITK: "
                "image.CopyInformation(scan))")
    assert [line for line in proc.stdout.splitlines() if line.startswith("warning:")] == [expected]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["warnings"] == [expected.removeprefix("warning: ")]
    assert summary["volume_mm3"] == pytest.approx(mask.sum())        # 1 mm³ per voxel, as the header says
    image, mask_path = scan(tmp_path, mask, name="with_spacing")
    cli("biomarkers", "--image", image, "--mask", mask_path, "--out", tmp_path / "spaced")
    assert json.loads((tmp_path / "spaced" / "summary.json").read_text())["warnings"] == []


@pytest.mark.parametrize("angle", [20.0, 35.0])
def test_oblique_tube_corrected_csa_is_true_csa(angle):
    """A tube tilted by theta shows an ellipse of area pi r^2 / cos(theta) in each slice; the
    corrected CSA recovers pi r^2 and the centreline angle is theta."""
    r, shape = 4.0, (20, 60, 150)
    mask = oblique_tube(6.0, 25.0, angle, r, shape=shape)
    res = nerve_biomarkers(mask, SPACING)
    rows = res.slices
    true = np.pi * r * r
    raw = np.median([row["csa_mm2"] for row in rows])
    corrected = np.median([row["csa_corrected_mm2"] for row in rows])
    assert raw == pytest.approx(true / np.cos(np.radians(angle)), rel=0.03)
    assert corrected == pytest.approx(true, rel=0.03)
    assert raw / corrected == pytest.approx(1 / np.cos(np.radians(angle)), rel=0.01)
    assert np.median([row["theta_deg"] for row in rows]) == pytest.approx(angle, abs=1.0)
    # centreline length: the tube's length between the first and last slice planes
    assert res.summary["centreline_length_mm"] == pytest.approx(shape[0] * SPACING[0] / np.cos(np.radians(angle)),
                                                                rel=0.02)


def test_track_cosines_are_exact_on_a_straight_line():
    z = np.arange(10) * 4.0
    line = np.c_[3 + 0.5 * z, 7 - 0.25 * z, z]
    assert np.allclose(track_cosines(line), 1 / np.sqrt(1 + 0.5 ** 2 + 0.25 ** 2))
    assert track_cosines(line[:1]).tolist() == [1.0]


def test_thickened_segment_is_flagged_and_a_normal_tube_is_not(tmp_path):
    thick = set(range(15, 22))
    mask = tube((24, 24), lambda z: 5.0 if int(z // SPACING[0]) in thick else 3.0)
    image, mask_path = scan(tmp_path, mask)
    out = tmp_path / "out"
    cli("biomarkers", "--image", image, "--mask", mask_path, "--out", out)
    summary = json.loads((out / "summary.json").read_text())
    lesion = summary["lesion"]
    assert lesion["reference"]["kind"] == "subject"
    assert [(s["first_slice"], s["last_slice"], s["criteria"]) for s in lesion["segments"]] == [(15, 21, ["csa"])]
    assert lesion["burden"] == pytest.approx(len(thick) / NZ)
    assert lesion["segments"][0]["length_mm"] == pytest.approx(len(thick) * SPACING[0])
    rows = read_csv(out / "slices.csv")
    assert {int(r["slice"]) for r in rows if r["lesion"] == "1"} == thick
    assert lesion["references"]["sciatic"]["csa_centre_mm2"] == pytest.approx(np.pi * 9,
                                                                              abs=disc_area_tolerance(3.0, SPACING[1:]))
    assert {r["lesion_reference"] for r in rows} == {"subject sciatic"}

    normal = nerve_biomarkers(tube((24, 24), 3.0), SPACING, t2_image(tube((24, 24), 3.0)))
    assert normal.summary["lesion"]["burden"] == 0 and normal.summary["lesion"]["segments"] == []
    assert not normal.lesion_slices.any()


def test_lesion_extent_option_through_the_cli(tmp_path):
    """A trunk of 50 mm² swollen by 30, 70, 100, 120, 100, 70, 30 % on slices 14-20: all seven
    are above threshold (centre + 20 %); by default the lesion is its full width at half
    maximum (15-19), with ``--lesion-extent threshold`` the run above threshold (14-20). An
    extent the rule does not know is refused in one line, through the library as well."""
    excess = {14: 0.3, 15: 0.7, 16: 1.0, 17: 1.2, 18: 1.0, 19: 0.7, 20: 0.3}
    mask = tube((24, 24), lambda z: np.sqrt(50.0 * (1 + excess.get(int(z // SPACING[0]), 0.0)) / np.pi))
    image, mask_path = scan(tmp_path, mask)
    for option, expected in (((), (15, 19)), (("--lesion-extent", "threshold"), (14, 20))):
        out = tmp_path / f"out{len(option)}"
        cli("biomarkers", "--image", image, "--mask", mask_path, "--out", out, *option)
        segments = json.loads((out / "summary.json").read_text())["lesion"]["segments"]
        assert [(g["first_slice"], g["last_slice"]) for g in segments] == [expected]
    proc = cli("biomarkers", "--image", image, "--mask", mask_path, "--out", tmp_path / "bad",
               "--lesion-extent", "widest", check=False)
    assert proc.returncode == 2 and "--lesion-extent" in proc.stderr and not (tmp_path / "bad").exists()
    from nnunet_nerve import api
    with pytest.raises(NerveError, match="--lesion-extent 'widest': expected one of half-maximum, threshold"):
        api.biomarkers(tmp_path / "bad", image=image, mask=mask_path, lesion_extent="widest")
    assert not (tmp_path / "bad").exists()


def test_hyperintense_segment_is_flagged_by_signal():
    mask = tube((24, 24), 3.0)
    bright = np.full(SHAPE, 150.0)
    bright[30:34] = 240.0
    res = nerve_biomarkers(mask, SPACING, t2_image(mask, nerve=bright))
    assert [(s["first_slice"], s["last_slice"], s["criteria"]) for s in res.summary["lesion"]["segments"]] \
        == [(30, 33, ["signal"])]
    # reference: the middle intensity class, muscle (100), not air (0) or fat (300) -> nerve at about 1.5
    assert res.summary["lesion"]["references"]["sciatic"]["signal_centre"] == pytest.approx(1.5, abs=0.02)
    assert res.slices[31]["signal_mean_norm"] == pytest.approx(2.4, abs=0.03)


def _split_mask(small_at_larger_x: bool):
    """Sciatic (r 4 mm) over slices 0-19, then two branches: r 3 mm and r 2 mm, 13 mm apart in x."""
    big_x, small_x = (18.0, 31.0) if small_at_larger_x else (31.0, 18.0)
    mask = tube((24, 24), 4.0)
    mask[20:] = (tube((big_x, 24), 3.0) | tube((small_x, 24), 2.0))[20:]
    return mask, big_x, small_x


def test_split_into_branches_named_by_size_or_by_side():
    mask, big_x, small_x = _split_mask(small_at_larger_x=False)
    res = nerve_biomarkers(mask, SPACING)
    s = res.summary
    assert s["split"] == {"found": True, "first_slice": 20, "last_slice": NZ - 1, "naming": "volume",
                          "trunk": "first slices", "merged_slices": []}
    assert [row["region"] for row in res.slices] == ["sciatic"] * 20 + ["split"] * 20
    tibial = np.median([row["tibial_csa_mm2"] for row in res.slices[20:]])
    peroneal = np.median([row["peroneal_csa_mm2"] for row in res.slices[20:]])
    assert tibial == pytest.approx(np.pi * 9, abs=disc_area_tolerance(3.0, SPACING[1:]))
    assert peroneal == pytest.approx(np.pi * 4, abs=disc_area_tolerance(2.0, SPACING[1:]))
    assert s["branches"]["sciatic"]["voxels"] + s["branches"]["tibial"]["voxels"] \
        + s["branches"]["peroneal"]["voxels"] == mask.sum()
    labels = res.branch_labels
    assert (labels[25] == 3).any() and np.nonzero(labels[25] == 3)[1].mean() * SPACING[2] == pytest.approx(small_x, abs=1)

    # The imaged leg decides by position: peroneal = lateral. For a left leg (lateral = +x in the
    # grid here) the branch at larger x is the peroneal although it is the larger one.
    left = nerve_biomarkers(mask, SPACING, lateral_xy=(1.0, 0.0))
    assert left.summary["split"]["naming"] == "lateral"
    assert np.median([row["peroneal_csa_mm2"] for row in left.slices[20:]]) == pytest.approx(tibial)
    right = nerve_biomarkers(mask, SPACING, lateral_xy=(-1.0, 0.0))
    assert np.median([row["peroneal_csa_mm2"] for row in right.slices[20:]]) == pytest.approx(peroneal)


def test_side_option_through_the_cli(tmp_path):
    mask, big_x, _ = _split_mask(small_at_larger_x=False)
    image, mask_path = scan(tmp_path, mask)
    cli("biomarkers", "--image", image, "--mask", mask_path, "--out", tmp_path / "left", "--side", "left")
    rows = read_csv(tmp_path / "left" / "slices.csv")
    # identity direction: +x is the patient's left, so lateral for a left leg; the larger branch sits there
    assert float(rows[30]["peroneal_csa_mm2"]) > float(rows[30]["tibial_csa_mm2"])


def test_normative_reference_flags_an_extended_lesion(tmp_path, nnunet_env):
    """A nerve thickened along its whole length is normal against itself but a lesion against
    the volunteers' reference of its thigh location (the batch form over a converted dataset,
    named by its id); a location with too few volunteers is refused and says so."""
    ds = Path(nnunet_env["nnUNet_raw"]) / "Dataset901_Tubes"
    (ds / "imagesTr").mkdir(parents=True)
    (ds / "labelsTr").mkdir()
    cases = {"sub-01": ("volunteer", "distal", 3.0), "sub-02": ("volunteer", "distal", 3.2),
             "sub-03": ("volunteer", "distal", 3.1), "sub-04": ("volunteer", "medial", 3.1),
             "sub-05": ("patient", "distal", 4.5), "sub-06": ("patient", "medial", 4.5)}
    for case, (_, _, r) in cases.items():
        mask = tube((24, 24), r)
        write(ds / "imagesTr" / f"{case}_0000.nii.gz", t2_image(mask))
        write(ds / "labelsTr" / f"{case}.nii.gz", mask)
    (ds / "participants.tsv").write_text("participant_id\tcohort\tlocation\n"
                                         + "".join(f"{c}\t{k}\t{loc}\n" for c, (k, loc, _) in cases.items()))
    out = tmp_path / "out"
    proc = cli("biomarkers", "--masks", ds / "labelsTr", "--dataset", "901", "--out", out, "--reference", ds)
    assert "normative reference distal: 3 volunteer(s); per region sciatic 3" in proc.stdout
    assert "normative reference medial: 1 volunteer(s); per region sciatic 1" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["cases.csv", "reference.json", *sorted(cases)]
    rows = {r["case"]: r for r in read_csv(out / "cases.csv")}
    assert rows["sub-05"]["cohort"] == "patient" and float(rows["sub-05"]["lesion_burden"]) == 1.0
    assert all(float(rows[c]["lesion_burden"]) == 0.0 for c in ("sub-01", "sub-02", "sub-03", "sub-04"))
    patient = json.loads((out / "sub-05" / "summary.json").read_text())
    assert patient["lesion"]["reference"] == {"kind": "normative", "source": str(ds), "location": "distal",
                                              "notes": []}
    assert patient["lesion"]["references"]["sciatic"]["label"] == "normative distal sciatic (3 volunteers)"
    assert {r["lesion_reference"] for r in read_csv(out / "sub-05" / "slices.csv")} \
        == {"normative distal sciatic (3 volunteers)"}
    # the medial patient: one medial volunteer is below the minimum, so its own nerve is the reference
    medial = json.loads((out / "sub-06" / "summary.json").read_text())
    assert medial["lesion"]["references"]["sciatic"]["label"] == "subject sciatic"
    assert any("medial sciatic: normative reference refused, 1 volunteer(s)" in note
               for note in medial["lesion"]["reference"]["notes"])
    assert float(rows["sub-06"]["lesion_burden"]) == 0.0
    reference = NormativeReference.from_json_file(out / "reference.json")
    assert reference.volunteers == {"all": ["sub-01", "sub-02", "sub-03", "sub-04"],
                                    "distal": ["sub-01", "sub-02", "sub-03"], "medial": ["sub-04"]}
    assert reference.regions["distal"]["sciatic"]["slices"] == 3 * NZ

    own = nerve_biomarkers(tube((24, 24), 4.5), SPACING)
    assert own.summary["lesion"]["burden"] == 0.0
    # the saved reference is reusable; one scan gives its location with --location
    image = ds / "imagesTr" / "sub-05_0000.nii.gz"
    cli("biomarkers", "--image", image, "--mask", ds / "labelsTr" / "sub-05.nii.gz", "--out", tmp_path / "again",
        "--reference", out / "reference.json", "--location", "distal")
    assert json.loads((tmp_path / "again" / "summary.json").read_text())["lesion"]["burden"] == 1.0
    # an unknown location is compared with every location's volunteers, and says so
    cli("biomarkers", "--image", image, "--mask", ds / "labelsTr" / "sub-05.nii.gz", "--out", tmp_path / "pooled",
        "--reference", out / "reference.json")
    pooled = json.loads((tmp_path / "pooled" / "summary.json").read_text())["lesion"]
    assert pooled["burden"] == 1.0 and pooled["references"]["sciatic"]["label"] == "normative all sciatic (4 volunteers)"
    assert pooled["reference"]["notes"][0].startswith("location unknown")


def test_postprocessing_is_the_default_and_the_summary_lists_what_it_removed(tmp_path):
    from nnunet_nerve.biomarkers.measures import MASK_POSTPROCESSED, MASK_RAW, biomarkers_from_files

    nerve = tube((24, 24), 3.0)
    blob = tube((40, 40), 2.5) & (np.arange(NZ) < 4)[:, None, None]
    image, mask_path = scan(tmp_path, nerve | blob)
    raw = biomarkers_from_files(image, mask_path, postprocess=False)
    cleaned = biomarkers_from_files(image, mask_path)
    assert raw.summary["mask_used"] == MASK_RAW and raw.summary["postprocessing"] is None
    assert raw.summary["voxels"] == int((nerve | blob).sum())
    assert cleaned.summary["mask_used"] == MASK_POSTPROCESSED
    assert cleaned.summary["voxels"] == int(nerve.sum()) and not cleaned.summary["split"]["found"]
    assert cleaned.summary["postprocessing"]["removed_voxels"] == int(blob.sum())
    assert [(r["first_slice"], r["last_slice"], r["voxels"]) for r in cleaned.summary["postprocessing"]["removed"]] \
        == [(0, 3, int(blob.sum()))]
    assert cleaned.summary["postprocessing"]["removed"][0]["reason"].startswith("short: 4 slice(s)")
    out, out_raw = tmp_path / "out", tmp_path / "raw"
    assert f"post-processed mask (removed {int(blob.sum())} voxel(s) in 1 component group(s)" in \
        cli("biomarkers", "--image", image, "--mask", mask_path, "--out", out).stdout
    assert "raw (not post-processed) mask: " in \
        cli("biomarkers", "--image", image, "--mask", mask_path, "--out", out_raw, "--no-postprocess").stdout
    assert json.loads((out / "summary.json").read_text())["mask_used"] == MASK_POSTPROCESSED
    assert json.loads((out_raw / "summary.json").read_text())["voxels"] == int((nerve | blob).sum())


def test_a_vessel_touching_an_undivided_nerve_makes_no_division(tmp_path):
    """A nerve without a division (50 mm², r 4) and a vessel of 7 mm² touching it: a separate
    2D piece on slices 10-14, merged into the nerve's piece on slice 15. Measured raw, the
    vessel is a second branch and the nerve "divides"; post-processed (step 5), the vessel's
    track is removed and reported, and the nerve is one trunk over the whole stack."""
    nerve = tube((24, 24), 4.0)
    side = tube((30.5, 24), 1.5) & ((np.arange(NZ) >= 10) & (np.arange(NZ) <= 14))[:, None, None]
    joined = tube((28.5, 24), 1.5) & (np.arange(NZ) == 15)[:, None, None]
    image, mask_path = scan(tmp_path, nerve | side | joined)
    out, out_raw = tmp_path / "out", tmp_path / "raw"
    printed = cli("biomarkers", "--image", image, "--mask", mask_path, "--out", out).stdout
    assert f"removed {int(side.sum())} voxel(s) in 0 component group(s) and 1 vessel track(s)" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["split"]["trunk"] == "whole nerve" and not summary["split"]["found"]
    assert summary["postprocessing"]["removed"][0]["reason"].startswith("side piece")
    cli("biomarkers", "--image", image, "--mask", mask_path, "--out", out_raw, "--no-postprocess")
    assert json.loads((out_raw / "summary.json").read_text())["split"]["found"]
    # postprocess's options reach biomarkers: step 5 off keeps the vessel, which then divides the nerve
    kept = tmp_path / "kept"
    cli("biomarkers", "--image", image, "--mask", mask_path, "--out", kept, "--side-fraction", "0")
    summary = json.loads((kept / "summary.json").read_text())
    assert summary["split"]["found"] and summary["postprocessing"]["removed"] == []
    assert summary["postprocessing"]["rule"]["side_piece_fraction"] == 0


def test_postprocessing_options_of_biomarkers(tmp_path):
    """A tube of 40 slices with slices 9 and 10 missed: the default rule (gaps of up to 2 slices)
    fills both; with --max-gap 1 the gap stays, and the part below it (slices 0-8) is under half
    the tube above it (11-39), so it is removed as a look-alike. The rule used is in
    summary.json; a post-processing option with --no-postprocess is refused (it would do nothing)."""
    nerve = tube((24, 24), 3.0)
    nerve[9:11] = False
    image, mask_path = scan(tmp_path, nerve)
    filled, gap = tmp_path / "filled", tmp_path / "gap"
    cli("biomarkers", "--image", image, "--mask", mask_path, "--out", filled)
    cli("biomarkers", "--image", image, "--mask", mask_path, "--out", gap, "--max-gap", "1")
    rows = {name: read_csv(folder / "slices.csv") for name, folder in (("filled", filled), ("gap", gap))}
    assert [int(r["voxels"]) > 0 for r in rows["filled"][9:11]] == [True, True]
    assert [int(r["voxels"]) for r in rows["gap"][9:11]] == [0, 0]
    assert sum(int(r["voxels"]) for r in rows["gap"][:9]) == 0
    postprocessing = json.loads((gap / "summary.json").read_text())["postprocessing"]
    assert [(r["first_slice"], r["last_slice"]) for r in postprocessing["removed"]] == [(0, 8)]
    assert postprocessing["rule"]["max_gap_slices"] == 1 and postprocessing["rule"]["side_piece_fraction"] == 0.2
    _assert_cli_error(tmp_path, ["--image", image, "--mask", mask_path, "--no-postprocess", "--max-gap", "1"],
                      "--max-gap 1", "--no-postprocess")
    _assert_cli_error(tmp_path, ["--image", image, "--mask", mask_path, "--side-fraction", "0.7"], "--side-fraction")


def test_empty_mask_says_no_nerve_found(tmp_path):
    empty = np.zeros(SHAPE, dtype=bool)
    image, mask_path = scan(tmp_path, empty)
    out = tmp_path / "out"
    proc = cli("biomarkers", "--image", image, "--mask", mask_path, "--out", out)
    assert "no nerve found" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nerve_found"] is False and summary["volume_mm3"] == 0 and summary["length_mm"] == 0
    assert "no nerve found" in summary["message"]
    assert len(read_csv(out / "slices.csv")) == NZ
    assert (out / "mip.png").is_file() and (out / "profile.png").is_file()


def _assert_cli_error(tmp_path, args, *needles):
    out = tmp_path / "out"
    proc = cli("biomarkers", *args, "--out", out, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_mask_on_another_grid_is_refused(tmp_path):
    mask = tube((24, 24), 3.0)
    image = write(tmp_path / "t2.nii.gz", t2_image(mask))
    moved = write(tmp_path / "moved_mask.nii.gz", mask, spacing=(4.0, 0.6, 0.6))
    _assert_cli_error(tmp_path, ["--image", image, "--mask", moved], "moved_mask.nii.gz", "grid", "spacing")


def test_non_binary_mask_is_refused(tmp_path):
    labels = tube((24, 24), 3.0).astype(np.uint8)
    labels[20:] *= 2
    image = write(tmp_path / "t2.nii.gz", t2_image(labels > 0))
    path = write(tmp_path / "labels.nii.gz", labels)
    _assert_cli_error(tmp_path, ["--image", image, "--mask", path], "labels.nii.gz", "not binary", "0, 1, 2")
    with pytest.raises(NerveError, match="not binary"):
        nerve_biomarkers(labels, SPACING)


def test_batch_mask_without_image_is_refused(tmp_path):
    ds = tmp_path / "ds"
    (ds / "imagesTr").mkdir(parents=True)
    masks = tmp_path / "pred"
    masks.mkdir()
    write(masks / "sub-09.nii.gz", tube((24, 24), 3.0))
    proc = cli("biomarkers", "--masks", masks, "--dataset", ds, "--out", tmp_path / "out", check=False)
    assert proc.returncode == 2
    assert "sub-09.nii.gz: no image for case sub-09" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_batch_names_every_bad_case_before_measuring_any(tmp_path):
    """Four cases: one good, a mask cut short (its gzip stream ends early), a mask on another grid,
    a label mask (0/1/2). Every bad one is named in its own line with its problem before any case
    is measured, then a line counting them, exit 2, no output folder; a damaged post-processing
    report of the folder, which refuses every case alike, is its one error line. Before, the batch stopped at the first bad case, so a user met them
    one run at a time."""
    ds, masks = tmp_path / "ds", tmp_path / "pred"
    (ds / "imagesTr").mkdir(parents=True)
    masks.mkdir()
    nerve = tube((24, 24), 3.0)
    for case in ("sub-01", "sub-02", "sub-03", "sub-04"):
        write(ds / "imagesTr" / f"{case}_0000.nii.gz", t2_image(nerve))
    write(masks / "sub-01.nii.gz", nerve)
    cut = write(masks / "sub-02.nii.gz", nerve)
    data = Path(cut).read_bytes()
    Path(cut).write_bytes(data[: len(data) // 2])
    write(masks / "sub-03.nii.gz", nerve, spacing=(4.0, 0.6, 0.6))
    labels = nerve.astype(np.uint8)
    labels[20:] *= 2
    write(masks / "sub-04.nii.gz", labels)
    proc = cli("biomarkers", "--masks", masks, "--dataset", ds, "--out", tmp_path / "out", check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert [ln.split(":")[1].strip().rsplit("/", 1)[-1] for ln in lines[:3]] == \
        ["sub-02.nii.gz", "sub-03.nii.gz", "sub-04.nii.gz"], lines
    assert "gzip" in lines[0] and "grid" in lines[1] and "not binary" in lines[2]
    assert lines[-1].startswith("error: ") and "3 of 4 case(s) refused" in lines[-1]
    assert "nothing was measured" in lines[-1] and len(lines) == 4
    assert not (tmp_path / "out").exists()

    for case in ("sub-02", "sub-03", "sub-04"):
        write(masks / f"{case}.nii.gz", nerve)
    (masks / "postprocessing_nerve.json").write_text('{"files": ')
    proc = cli("biomarkers", "--masks", masks, "--dataset", ds, "--out", tmp_path / "out", check=False)
    assert proc.returncode == 2
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1 and "postprocessing_nerve.json: not a readable post-processing report" in errors[0]
    assert not (tmp_path / "out").exists()


def test_existing_output_is_not_overwritten(tmp_path):
    mask = tube((24, 24), 3.0)
    image, mask_path = scan(tmp_path, mask)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = cli("biomarkers", "--image", image, "--mask", mask_path, "--out", out, check=False)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_real_header_data(tmp_path, shared_data):
    """The SCT T2* stack (320 x 320 x 11, 0.5 x 0.5 x 7.5 mm, oblique direction) with its grey-matter mask."""
    image = shared_data / "sct" / "t2s_uncropped.nii.gz"
    mask = shared_data / "sct" / "t2s_uncropped_gmseg_manual.nii.gz"
    out = tmp_path / "out"
    cli("biomarkers", "--image", image, "--mask", mask, "--out", out)
    for name in ("slices.csv", "summary.json", "profile.png", "mip.png"):
        assert (out / name).stat().st_size > 0
    reference = sitk.ReadImage(str(mask))
    voxels = int((sitk.GetArrayFromImage(reference) > 0).sum())
    voxel_mm3 = float(np.prod(reference.GetSpacing()))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["voxels"] == voxels
    assert summary["volume_mm3"] == pytest.approx(voxels * voxel_mm3, rel=1e-6)
    assert summary["volume_ml"] == pytest.approx(voxels * voxel_mm3 / 1000, rel=1e-6)
    rows = read_csv(out / "slices.csv")
    assert len(rows) == reference.GetSize()[2]
    assert sum(float(r["csa_mm2"]) for r in rows) * reference.GetSpacing()[2] == pytest.approx(voxels * voxel_mm3)
    assert all(0.9 < float(r["signal_mean_norm"]) < 3 for r in rows if int(r["voxels"]) > 0)


def test_phantom_registry_batch_with_normative_reference(tmp_path):
    """The synthetic registry as the image source (sub-*/anat/*_T2w) and, through the raters'
    majority vote, as the normative reference; the consensus masks stand in for predictions.
    Its distal stacks split towards the knee with the peroneal branch lateral and smaller, and
    its patients carry a focal or an extended nerve swelling whose true extent participants.tsv
    records (seed 11: four distal volunteers, a focal and an extended distal patient)."""
    from nnunet_nerve.registry.consensus import majority_vote
    from nnunet_nerve.registry.phantom import write_phantom_registry
    from nnunet_nerve.registry.reader import scan_registry

    registry = write_phantom_registry(tmp_path / "registry", volunteers=4, patients=2, seed=11, log=None)
    scanned = scan_registry(registry)
    masks = tmp_path / "masks"
    masks.mkdir()
    for pid in scanned.participant_ids:
        raters = [sitk.ReadImage(str(p)) for p in scanned.files[pid].masks.values()]
        vote = sitk.GetImageFromArray(majority_vote([sitk.GetArrayFromImage(r) for r in raters]).astype(np.uint8))
        vote.CopyInformation(raters[0])
        sitk.WriteImage(vote, str(masks / f"{pid}.nii.gz"))
    own, normative = tmp_path / "own", tmp_path / "normative"
    cli("biomarkers", "--masks", masks, "--dataset", registry, "--out", own, "--side", "right")
    cli("biomarkers", "--masks", masks, "--dataset", registry, "--out", normative, "--reference", registry,
        "--side", "right")
    participants = {p.participant_id: p for p in scanned.participants}
    assert {p.location for p in participants.values()} == {"distal"}
    rows_own = {r["case"]: r for r in read_csv(own / "cases.csv")}
    rows_norm = {r["case"]: r for r in read_csv(normative / "cases.csv")}
    reference = json.loads((normative / "reference.json").read_text())
    volunteers = sorted(p for p, row in participants.items() if row.extra["lesion"] == "none")
    assert reference["volunteers"]["distal"] == volunteers
    for pid, p in participants.items():
        kind = p.extra["lesion"]
        burden_own, burden_norm = float(rows_own[pid]["lesion_burden"]), float(rows_norm[pid]["lesion_burden"])
        segments = json.loads((own / pid / "summary.json").read_text())["lesion"]["segments"]
        if kind == "none":
            assert burden_own == 0.0 and burden_norm == 0.0, pid
        elif kind == "focal":   # found against its own nerve, where participants.tsv says it is (within a slice)
            first, last = int(p.extra["lesion_first_slice"]), int(p.extra["lesion_last_slice"])
            assert len(segments) == 1, segments
            assert abs(segments[0]["first_slice"] - first) <= 1 and abs(segments[0]["last_slice"] - last) <= 1
        else:   # extended along the whole stack: invisible against itself, visible against the volunteers
            assert (p.extra["lesion_first_slice"], p.extra["lesion_last_slice"]) == ("0", str(SHAPE[0] // 2 - 1))
            assert burden_own < 0.2 and burden_norm == 1.0, pid
    # the right leg's lateral side is -x here (the phantom puts medial at +x): by position the
    # peroneal is the smaller branch, as the volume rule says
    for pid in rows_own:
        summary = json.loads((own / pid / "summary.json").read_text())
        assert summary["split"]["found"] and summary["split"]["naming"] == "lateral"
        assert summary["split"]["trunk"] == "last slices"       # the stacks split towards the knee (slice 0)
        branches = summary["branches"]
        assert branches["peroneal"]["volume_mm3"] < branches["tibial"]["volume_mm3"]


def test_diverging_branches_are_corrected_with_their_own_centrelines():
    """Two straight branches tilted by +-25 degrees in x: each branch's corrected CSA is its true
    cross-section, and so is the slice total, while the total centroid stays put (a single
    centreline through both would see no tilt at all)."""
    r, angle, shape = 2.5, 25.0, (16, 60, 160)
    left = oblique_tube(40.0, 15.0, -angle, r, shape=shape)
    right = oblique_tube(40.0, 15.0, angle, r, shape=shape)
    mask = left | right
    res = nerve_biomarkers(mask, SPACING)
    split = [row for row in res.slices if row["region"] == "split"]
    assert len(split) >= 12
    true = np.pi * r * r
    for name in ("tibial", "peroneal"):
        assert np.median([row[f"{name}_csa_corrected_mm2"] for row in split]) == pytest.approx(true, rel=0.04)
        assert np.median([row[f"{name}_cos_theta"] for row in split]) == pytest.approx(np.cos(np.radians(angle)),
                                                                                     abs=0.01)
    assert np.median([row["csa_corrected_mm2"] for row in split]) == pytest.approx(2 * true, rel=0.04)


def test_real_mask_on_another_real_grid_is_refused(tmp_path, shared_data):
    out = tmp_path / "out"
    proc = cli("biomarkers", "--image", shared_data / "sct" / "t2.nii.gz",
               "--mask", shared_data / "sct" / "t2s_uncropped_gmseg_manual.nii.gz", "--out", out, check=False)
    assert proc.returncode == 2
    assert "t2s_uncropped_gmseg_manual.nii.gz: mask is not on the image's grid" in proc.stderr
    assert not out.exists()


def test_an_image_without_reference_tissue_gives_no_signal_and_no_plotting_warning(tmp_path):
    """An "image" holding only two values (here the mask itself) has no middle intensity class,
    so no slice has a signal reference: every signal column is empty, the scan is still
    measured, and profile.png says why instead of matplotlib warning on stderr about a legend
    without entries."""
    nerve = tube((24, 24), 3.0)
    image, mask_path = scan(tmp_path, nerve, image=nerve.astype(np.uint8))
    done = cli("biomarkers", "--image", image, "--mask", mask_path, "--out", tmp_path / "out")
    assert "Warning" not in done.stderr and "legend" not in done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["signal_mean_norm"]["mean"] is None and summary["volume_mm3"] > 0
    assert (tmp_path / "out" / "profile.png").stat().st_size > 0


def test_slices_along_the_nerve_are_refused_and_reoriented_ones_measured(tmp_path):
    """The nerve runs head to foot. A straight tube (r 3 mm) measured on axial slices, on the
    same voxels stored as coronal slices (the grid's axes permuted: each slice cuts the tube
    lengthwise; a phantom nerve stored so measured 14 mm long with a mean CSA of 451 mm², against
    80 mm and 122 mm² on its axial slices) and on those reoriented with
    SimpleITK.DICOMOrient(..., 'LPS'), as the error says: the coronal scan is refused with one
    line naming the image and nothing written; the reoriented one gives the axial numbers. A
    stack tilted 40 degrees from axial (oblique) is measured; at 50 degrees it is refused."""
    nerve = tube((24, 24), 3.0)
    axial_image = write(tmp_path / "axial_t2.nii.gz", t2_image(nerve))
    axial_mask = write(tmp_path / "axial_mask.nii.gz", nerve)
    cli("biomarkers", "--image", axial_image, "--mask", axial_mask, "--out", tmp_path / "axial")
    expected = json.loads((tmp_path / "axial" / "summary.json").read_text())

    names = {}
    for name in ("t2", "mask"):
        image = sitk.PermuteAxes(sitk.ReadImage(str(tmp_path / f"axial_{name}.nii.gz")), [0, 2, 1])
        names[name] = tmp_path / f"coronal_{name}.nii.gz"
        sitk.WriteImage(image, str(names[name]))
        sitk.WriteImage(sitk.DICOMOrient(image, "LPS"), str(tmp_path / f"reoriented_{name}.nii.gz"))
    proc = cli("biomarkers", "--image", names["t2"], "--mask", names["mask"], "--out", tmp_path / "coronal",
               check=False)
    assert proc.returncode == 2 and not (tmp_path / "coronal").exists()
    assert proc.stderr.strip() == (
        f"error: {names['t2']}: the slices are coronal (their normal is 90 degrees from the head-foot axis, towards "
        "the anterior-posterior axis) and cut the nerve lengthwise; CSA per slice needs axial slices across the "
        "nerve: reorient the image and its masks to axial first (SimpleITK.DICOMOrient(image, 'LPS') permutes and "
        "flips the axes without resampling)")
    cli("biomarkers", "--image", tmp_path / "reoriented_t2.nii.gz", "--mask", tmp_path / "reoriented_mask.nii.gz",
        "--out", tmp_path / "reoriented")
    summary = json.loads((tmp_path / "reoriented" / "summary.json").read_text())
    for key in ("voxels", "volume_mm3", "length_mm", "slices_with_nerve"):
        assert summary[key] == expected[key], key
    assert summary["csa_mm2"] == expected["csa_mm2"]
    assert expected["warnings"] == [] and summary["warnings"] == []

    # The coronal files with their orientation lost (identity direction): the header says axial, the
    # numbers are wrong, and the mask's shape says so (pieces long and thin on few slices).
    for name in ("t2", "mask"):
        image = sitk.ReadImage(str(names[name]))
        image.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
        sitk.WriteImage(image, str(tmp_path / f"lost_{name}.nii.gz"))
    proc = cli("biomarkers", "--image", tmp_path / "lost_t2.nii.gz", "--mask", tmp_path / "lost_mask.nii.gz",
               "--out", tmp_path / "lost")
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {tmp_path / 'lost_mask.nii.gz'}: the nerve looks "
                                                         "cut lengthwise: its pieces are ")
    assert json.loads((tmp_path / "lost" / "summary.json").read_text())["warnings"] == [warnings[0][len("warning: "):]]

    for degrees, refused in ((40, False), (50, True)):
        a = np.radians(degrees)   # the slices' normal tilted towards anterior-posterior (a rotation about x)
        direction = (1.0, 0.0, 0.0, 0.0, np.cos(a), np.sin(a), 0.0, -np.sin(a), np.cos(a))
        image = write(tmp_path / f"tilt{degrees}_t2.nii.gz", t2_image(nerve), direction=direction)
        mask = write(tmp_path / f"tilt{degrees}_mask.nii.gz", nerve, direction=direction)
        proc = cli("biomarkers", "--image", image, "--mask", mask, "--out", tmp_path / f"tilt{degrees}", check=False)
        assert proc.returncode == (2 if refused else 0), proc.stderr
        assert ("the slices are coronal (their normal is 50 degrees" in proc.stderr) == refused


def test_a_real_sagittal_cord_with_its_orientation_lost_is_said_to_look_cut_lengthwise(tmp_path, shared_data):
    """The Spinal Cord Toolbox's 3D T2w and its manual cord mask (sagittal slices: refused as they
    are) with their direction set to the identity, as a conversion that drops the orientation
    leaves them: the header now says axial, the cord is measured, and one `warning:` line says
    that its pieces are long streaks on few slices (the check reads the mask, not the header)."""
    lost = {}
    for name, file in (("t2", "t2.nii.gz"), ("mask", "t2_seg-manual.nii.gz")):
        image = sitk.ReadImage(str(shared_data / "sct" / file))
        image.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
        lost[name] = tmp_path / f"lost_{file}"
        sitk.WriteImage(image, str(lost[name]))
    refused = cli("biomarkers", "--image", shared_data / "sct" / "t2.nii.gz", "--mask",
                  shared_data / "sct" / "t2_seg-manual.nii.gz", "--out", tmp_path / "as_is", check=False)
    assert refused.returncode == 2 and "the slices are sagittal" in refused.stderr
    proc = cli("biomarkers", "--image", lost["t2"], "--mask", lost["mask"], "--out", tmp_path / "lost")
    assert [line for line in proc.stdout.splitlines() if line.startswith("warning:")] == [
        f"warning: {lost['mask']}: the nerve looks cut lengthwise: its pieces are 6 times longer than wide and 55 mm "
        "long (medians over its 13 slices), longer than the 13.0 mm of stack it covers; if the slices are really "
        "coronal or sagittal, the header's orientation was lost and CSA per slice is not a cross-section"]


def test_an_inverted_mask_is_refused_not_measured(tmp_path):
    """A mask with its labels swapped (nerve 0, background 1) would be measured as a nerve
    filling the thigh: refused with one line naming it and the likely cause, nothing written."""
    nerve = tube((24, 24), 3.0)
    image = write(tmp_path / "t2.nii.gz", t2_image(nerve))
    mask = write(tmp_path / "inverted.nii.gz", ~nerve)
    proc = cli("biomarkers", "--image", image, "--mask", mask, "--out", tmp_path / "out", check=False)
    share = 100 * (~nerve).mean()
    assert proc.returncode == 2 and not (tmp_path / "out").exists()
    assert proc.stderr.strip() == (f"error: {mask}: mask marks {share:.1f} % of the voxels as nerve (more than 50 %: "
                                   "inverted, nerve 0 and background 1?)")
