"""`nnunet-nerve segment` end to end with a real trained model: FCDenseNetTrainer_cpuSmoke trained once
for the module with the real nnUNetv2_plan_and_preprocess and nnUNetv2_train on tiny data, then a
NIfTI and a DICOM series of the same scan segmented (the console script in subprocesses, and the
library function), compared voxel by voxel with nnUNetv2_predict; bad input refused with one
line and nothing written."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run, script
from dicom_checks import dciodvfy_errors, nifti_values_at, pixel_points, seg_frames_by_source, source_geometry
from tiny_dataset import write_raw_dataset

pytestmark = pytest.mark.integration
DATASET_ID = 904
TRAINER = "FCDenseNetTrainer_cpuSmoke"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model folder trained by nnUNetv2_train (fold 0), its test image, and the environment."""
    from nnunet_nerve.training.trainer_dir import trainer_dir

    root = tmp_path_factory.mktemp("segment_model")
    env = dict(os.environ)
    env.update(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"),
               nnUNet_results=str(root / "results"), nnUNet_extTrainer=trainer_dir(), nnUNet_n_proc_DA="1",
               nnUNet_compile="false", MPLCONFIGDIR=str(root / "mpl"), OMP_NUM_THREADS="2")
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "MPLCONFIGDIR"):
        Path(env[key]).mkdir(parents=True, exist_ok=True)
    raw = write_raw_dataset(root / "raw", DATASET_ID, name="Segment", n_train=5, n_test=1)
    run([script("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "-np", "1", "-npfp", "1"], env=env)
    # one export worker for the end-of-training validation (nnU-Net spawns 8 by default)
    run([script("nnUNetv2_train"), str(DATASET_ID), "2d", "0", "-tr", TRAINER, "-device", "cpu"],
        env={**env, "nnUNet_def_n_proc": "1"})
    model = root / "results" / f"Dataset{DATASET_ID:03d}_Segment" / f"{TRAINER}__nnUNetPlans__2d"
    assert (model / "fold_0" / "checkpoint_final.pth").is_file()
    image = raw / "imagesTs" / "sub-t00_0000.nii.gz"
    # nnU-Net's own prediction of the test image, the reference for every comparison below
    pred = root / "nnunet_predict"
    run([script("nnUNetv2_predict"), "-i", str(raw / "imagesTs"), "-o", str(pred), "-d", str(DATASET_ID), "-c", "2d",
         "-tr", TRAINER, "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_progress_bar"], env=env)
    return SimpleNamespace(root=root, env=env, model=model, image=image,
                           nnunet_prediction=pred / "sub-t00.nii.gz")


@pytest.fixture(scope="module")
def dicom_series(trained):
    """The test image written as a DICOM MR series (files in shuffled order)."""
    from nnunet_nerve.dicom.synthetic import write_dicom_series

    folder = trained.root / "dicom" / "sub-t00"
    write_dicom_series(sitk.ReadImage(str(trained.image)), folder, instance_order="shuffled")
    return folder


def test_nifti_segmentation_is_nnunetv2_predicts(trained, tmp_path):
    out = tmp_path / "out"
    proc = run([script("nnunet-nerve"), "segment", str(trained.image), str(out), "--model", str(trained.model),
                "--no-postprocess"], env=trained.env)
    ours, theirs = sitk.ReadImage(str(out / "segmentation.nii.gz")), sitk.ReadImage(str(trained.nnunet_prediction))
    assert np.array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(theirs))
    image = sitk.ReadImage(str(trained.image))
    for what in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert np.allclose(getattr(ours, what)(), getattr(image, what)(), atol=1e-6), what
    assert sorted(p.name for p in out.iterdir()) == ["biomarkers", "report.html", "segment.json",
                                                     "segmentation.nii.gz"]
    for stage in ("read input", "load model", "predict", "post-process", "biomarkers", "write segmentation",
                  "report"):
        assert re.search(rf"\[\d/7\] {stage}: \d+\.\d s", proc.stdout), stage
    record = json.loads((out / "segment.json").read_text())
    assert record["model"]["trainer"] == TRAINER and record["model"]["folds"] == [0]
    assert record["model"]["patch_size"] == [64, 64] and record["postprocess"] is False
    assert {f["name"]: f["raised"] for f in record["flags"]}["geometry"] is False


def test_a_nifti_without_geometry_is_segmented_and_flagged(trained, tmp_path):
    """The test image's voxels written with SimpleITK's defaults (1 mm voxels at origin 0): `segment`
    runs, but its `geometry` flag is raised (segment.json, report.html) and printed as a `warning:` line."""
    bare = tmp_path / "bare_0000.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(sitk.GetArrayFromImage(sitk.ReadImage(str(trained.image)))), str(bare))
    out = tmp_path / "out"
    proc = run([script("nnunet-nerve"), "segment", str(bare), str(out), "--model", str(trained.model)], env=trained.env)
    flag = {f["name"]: f for f in json.loads((out / "segment.json").read_text())["flags"]}["geometry"]
    assert flag["raised"] and flag["message"].startswith("the header holds no geometry (1 mm voxels at origin 0")
    assert f"warning: {flag['message']}" in proc.stdout.splitlines()


def test_dicom_series_to_seg_nifti_biomarkers_and_report(trained, dicom_series, tmp_path):
    from nnunet_nerve.io.images import spacing_zyx
    from nnunet_nerve.biomarkers.postprocess import postprocess_nerve
    from nnunet_nerve.segmentation.segment import segment

    out = tmp_path / "out"
    lines = []
    result = segment(dicom_series, out, trained.model, log=lines.append)
    assert sorted(result.paths) == ["biomarkers", "dicom_seg", "postprocessing", "record", "report", "segmentation"]
    assert {p.name for p in out.iterdir()} == {p.name for p in result.paths.values()}
    assert all(p.exists() for p in result.paths.values())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folder left behind"

    # the prediction is nnUNetv2_predict's on the same scan, then the nerve-tube post-processing
    reference = sitk.ReadImage(str(trained.nnunet_prediction))
    expected = postprocess_nerve(sitk.GetArrayFromImage(reference), spacing_zyx(reference)).mask
    ours = sitk.ReadImage(str(out / "segmentation.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(ours), expected.astype(np.uint8))

    # every source instance: SEG frame == NIfTI at that instance's pixels
    sources = source_geometry(dicom_series)
    seg, frames = seg_frames_by_source(out / "segmentation.dcm")
    assert set(frames) <= set(sources)
    for uid, src in sources.items():
        frame = frames.get(uid, np.zeros((src["rows"], src["cols"]), dtype=np.uint8))
        assert np.array_equal(frame, nifti_values_at(ours, pixel_points(src))), src["path"].name
    assert str(seg.SeriesDescription).startswith("Sciatic nerve")
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert f"trainer={TRAINER}" in algorithm.AlgorithmParameters and "folds=0" in algorithm.AlgorithmParameters
    errors = dciodvfy_errors(out / "segmentation.dcm")
    assert not errors, "\n".join(errors)

    # biomarkers as `nnunet-nerve biomarkers` writes them; the report is one self-contained page
    assert sorted(p.name for p in (out / "biomarkers").iterdir()) == ["mip.png", "profile.png", "slices.csv",
                                                                       "summary.json"]
    summary = json.loads((out / "biomarkers" / "summary.json").read_text())
    assert summary["voxels"] == int(expected.sum())
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3
    assert not re.search(r'(src|href)="(?!data:)', page), "report.html links an external file"
    for heading in ("Quality flags", "Time", "Summary", "Three slices", "Cross-sectional area", "Rendering"):
        assert heading in page
    assert "19 ± 8 min" in page
    record = json.loads((out / "segment.json").read_text())
    assert [f["name"] for f in record["flags"]] == ["no_nerve", "field_of_view_edge", "postprocessing",
                                                    "csa_reference", "cut_lengthwise", "geometry"]
    assert set(record["timings_s"]) == {"read input", "load model", "predict", "post-process", "biomarkers",
                                        "write segmentation", "report"}
    assert record["input"]["series_uid"] == str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
    assert any(line.startswith("[7/7] report: ") for line in lines)


# ----------------------------------------------------------------------------- bad input

def _cli(args, capsys) -> tuple:
    from nnunet_nerve.app.cli import main

    code = main(["segment", *map(str, args)])
    captured = capsys.readouterr()
    return code, [line for line in captured.err.splitlines() if line.startswith("error:")]


def _refused(args, out: Path, capsys, *words, lines: int = 1):
    before = sorted(p.name for p in out.parent.iterdir()) if out.parent.exists() else []
    code, errors = _cli(args, capsys)
    assert code == 2
    assert len(errors) == lines, errors
    for word in words:
        assert word in errors[-1], errors
    after = sorted(p.name for p in out.parent.iterdir()) if out.parent.exists() else []
    assert after == before, "something was written"
    return errors


def test_bad_dicom_input_is_refused_with_one_line_and_nothing_written(trained, dicom_series, tmp_path, capsys):
    out = tmp_path / "work" / "out"
    out.parent.mkdir()
    model = ["--model", trained.model]
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("no images here")
    _refused([notes, out, *model], out, capsys, str(notes), "no DICOM files")

    gap = tmp_path / "gap"
    shutil.copytree(dicom_series, gap)
    sources = source_geometry(gap)
    ordered = sorted(sources.values(), key=lambda s: float(np.dot(s["ipp"], np.cross(s["row"], s["col"]))))
    ordered[2]["path"].unlink()
    _refused([gap, out, *model], out, capsys, str(gap), "non-uniform slice spacing", "missing slice")

    from nnunet_nerve.dicom.synthetic import write_dicom_series

    two = tmp_path / "two"
    shutil.copytree(dicom_series, two)
    write_dicom_series(sitk.ReadImage(str(trained.image)), tmp_path / "second")
    for f in (tmp_path / "second").iterdir():
        shutil.copy(f, two / f"second_{f.name}")
    _refused([two, out, *model], out, capsys, "2 DICOM series", "--series", lines=3)

    single = dicom_series / sorted(p.name for p in dicom_series.iterdir())[0]
    _refused([single, out, *model], out, capsys, "single DICOM file")

    from nnunet_nerve.dicom.seg import Algorithm
    from nnunet_nerve.segmentation.segment import read_input, write_masks

    scan = read_input(dicom_series)
    mask = np.zeros(sitk.GetArrayViewFromImage(scan.image).shape, dtype=bool)
    mask[1:3, 10:20, 10:20] = True
    (tmp_path / "segs").mkdir()
    write_masks(tmp_path / "segs", scan, mask, Algorithm(TRAINER, "2d", (0,)))
    (tmp_path / "segs" / "segmentation.nii.gz").unlink()
    _refused([tmp_path / "segs", out, *model], out, capsys, "segmentation.dcm", "multi-frame")


def test_bad_model_and_output_are_refused_with_one_line_and_nothing_written(trained, dicom_series, tmp_path,
                                                                              capsys):
    out = tmp_path / "work" / "out"
    out.parent.mkdir()
    no_checkpoint = tmp_path / "models" / "FCDenseNetTrainer__nnUNetPlans__2d"
    (no_checkpoint / "fold_0").mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        shutil.copy(trained.model / name, no_checkpoint / name)
    _refused([trained.image, out, "--model", no_checkpoint], out, capsys, str(no_checkpoint), "no fold_<k>/",
             "folds present: fold_0")
    _refused([trained.image, out, "--model", trained.model, "-f", "0", "3"], out, capsys, "fold_3/checkpoint_final.pth",
             "folds with a checkpoint: 0")
    _refused([trained.image, out, "--model", tmp_path / "nowhere"], out, capsys, "no such model folder")

    damaged = tmp_path / "damaged" / trained.model.name
    shutil.copytree(trained.model, damaged, ignore=shutil.ignore_patterns("validation", "checkpoint_best.pth"))
    checkpoint = damaged / "fold_0" / "checkpoint_final.pth"
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    _refused([trained.image, out, "--model", damaged], out, capsys, str(checkpoint), "cannot read the checkpoint")

    # OUT: never overwritten without --overwrite, never an input
    out.mkdir()
    (out / "keep.txt").write_text("a user's file")
    _refused([trained.image, out, "--model", trained.model], out, capsys, "already exists", "--overwrite")
    assert (out / "keep.txt").read_text() == "a user's file"
    inside = dicom_series / "out"
    _refused([dicom_series, inside, "--model", trained.model, "--overwrite"], inside, capsys, "lies inside",
             "input")
    _refused([dicom_series, dicom_series.parent, "--model", trained.model, "--overwrite"], dicom_series.parent / "x",
             capsys, "contains", "input")
    _refused([trained.image, trained.model, "--model", trained.model, "--overwrite"], trained.model / "x", capsys,
             "model folder")
    assert dicom_series.is_dir() and len(list(dicom_series.iterdir())) == 6
