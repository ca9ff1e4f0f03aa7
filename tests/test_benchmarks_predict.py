"""benchmarks/bench_predict.py and benchmarks/bench_inference_settings.py without timing assertions:
bench_predict's whole set-up and both predictions on a tiny scan (real nnU-Net commands), its
refusal of a non-empty work folder and its tile count; bench_inference_settings' scoring, table,
mirrored checkpoint copy and settings on files written here (its full run needs a trained demo
and takes minutes; docs/inference.md quotes it)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO, run

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_common  # noqa: E402
import bench_inference_settings as bis  # noqa: E402
import bench_predict as bp  # noqa: E402

pytestmark = pytest.mark.benchmark_script

BENCH_PREDICT = str(REPO / "benchmarks" / "bench_predict.py")


# ----------------------------------------------------------------------------- bench_predict

@pytest.mark.integration
def test_bench_predict_tiny_scan_end_to_end(nnunet_env, tmp_path):
    work = tmp_path / "work"
    proc = run([sys.executable, BENCH_PREDICT, "--slices", "2", "--rows", "64", "--cols", "64", "--rounds", "1",
                "--workdir", str(work)], env=nnunet_env, timeout=1500)
    out = proc.stdout
    wd = bp.Workdir(work)
    scan = sitk.ReadImage(str(wd.scan_path))
    assert scan.GetSize() == (64, 64, 2) and np.allclose(scan.GetSpacing(), (0.52, 0.52, 4.0))
    for trainer in bp.TRAINERS:
        prediction = wd.predictions(trainer) / f"{bp.SCAN}.nii.gz"
        assert bp.geometry_problems(prediction, wd.scan_path) == [], trainer
        assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(prediction))))) <= {0, 1}

    # FCDenseNetTrainer's results folder carries its own inference set-up: 320 x 320 patch, no mirroring.
    fcd = wd.model_folder("FCDenseNetTrainer")
    assert json.loads((fcd / "plans.json").read_text())["configurations"]["2d"]["patch_size"] == [320, 320]
    import torch

    checkpoint = torch.load(fcd / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == "FCDenseNetTrainer"
    assert checkpoint["inference_allowed_mirroring_axes"] is None
    # nnUNetTrainer's is nnU-Net's plan with mirroring on both axes.
    planned = json.loads((wd.preprocessed / bp.DATASET_NAME / "nnUNetPlans.json").read_text())
    unet = wd.model_folder("nnUNetTrainer")
    assert (json.loads((unet / "plans.json").read_text())["configurations"]["2d"]["patch_size"]
            == planned["configurations"]["2d"]["patch_size"])
    checkpoint = torch.load(unet / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert tuple(checkpoint["inference_allowed_mirroring_axes"]) == (0, 1)
    # The planned-patch variant predicts with nnU-Net's planned patch (multiple of 16).
    variant = wd.model_folder("FCDenseNetTrainer_plannedPatchInference")
    assert (json.loads((variant / "plans.json").read_text())["configurations"]["2d"]["patch_size"]
            == [-(-p // 16) * 16 for p in planned["configurations"]["2d"]["patch_size"]])

    # What nnUNetv2_predict loaded, as the report prints it.
    assert "| FCDenseNetTrainer | FCDenseNet | 979,106 | 320 x 320 | None | 1 | 1 |" in out, out
    assert "| nnUNetTrainer | PlainConvUNet |" in out and "[0, 1]" in out, out
    assert "content: blob" in out and "mirroring for the U-Net: on" in out
    assert "ratio nnUNetTrainer / FCDenseNetTrainer," in out
    assert "ratio nnUNetTrainer / FCDenseNetTrainer_plannedPatchInference," in out


def test_bench_predict_refuses_non_empty_workdir(tmp_path, nnunet_env):
    work = tmp_path / "busy"
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    proc = run([sys.executable, BENCH_PREDICT, "--slices", "2", "--rows", "64", "--cols", "64",
                "--workdir", str(work)], env=nnunet_env, timeout=300, check=False)
    assert proc.returncode != 0
    assert "not empty" in proc.stderr
    assert sorted(p.name for p in work.iterdir()) == ["keep.txt"]
    with pytest.raises(SystemExit):
        bench_common.prepare_workdir(work, bp.WORKDIR_PREFIX)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert bench_common.prepare_workdir(empty, bp.WORKDIR_PREFIX) == empty.resolve()
    assert bench_common.prepare_workdir(tmp_path / "new", bp.WORKDIR_PREFIX).is_dir()


def test_tiles_per_slice_follow_nnunet_sliding_window():
    tiles = bench_common.tiles_per_slice
    assert tiles(640, 768, (320, 320), 0.5) == 3 * 4
    assert tiles(640, 768, (320, 320), 1.0) == 2 * 3
    assert tiles(640, 768, (640, 768), 0.5) == 1
    assert tiles(64, 64, (320, 320), 0.5) == 1  # padded up to the patch
    # (rows, cols) order: a 320 x 960 slice is one tile of a 320 x 960 patch, but padded to
    # 960 x 960 under a 960 x 320 patch it takes 1 x 5 tiles at half-patch steps.
    assert tiles(320, 960, (320, 960), 0.5) == 1
    assert tiles(320, 960, (960, 320), 0.5) == 1 * 5


def test_bench_predict_content_paper_grid_is_phantom():
    assert bp.content_kind(640, 768) == "phantom"
    assert bp.content_kind(64, 64) == "blob"
    image, label = bp.phantom_case(0, 1, 640, 768)
    assert image.shape == label.shape == (1, 640, 768) and image.dtype == np.int16
    assert 0 < label.sum() < 0.01 * label.size
    image, label = bp.blob_case(0, 2, 64, 64)
    assert image.shape == (2, 64, 64) and label.any() and (image > 0).all()


# ----------------------------------------------------------------------------- bench_inference_settings

def _write(array, path, spacing=(1.25, 1.25, 4.0)):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def _cube(shape=(4, 20, 20), lo=5, hi=12):
    a = np.zeros(shape, np.uint8)
    a[:, lo:hi, lo:hi] = 1
    return a


def test_score_folder_and_table_on_files(tmp_path):
    from nnunet_nerve.evaluation import metrics

    ref = _cube()
    shifted = np.roll(ref, 2, axis=2)
    labels = {"a": _write(ref, tmp_path / "labels" / "a.nii.gz"), "b": _write(ref, tmp_path / "labels" / "b.nii.gz")}
    _write(ref, tmp_path / "default" / "a.nii.gz")
    _write(ref, tmp_path / "default" / "b.nii.gz")
    _write(ref, tmp_path / "other" / "a.nii.gz")
    _write(shifted, tmp_path / "other" / "b.nii.gz")

    base = bis.score_folder(tmp_path / "default", labels, tmp_path / "default")
    other = bis.score_folder(tmp_path / "other", labels, tmp_path / "default")
    assert base == {c: {"dice": 1.0, "hd95": 0.0, "agreement": 1.0} for c in "ab"}
    expected_b = metrics.dice(shifted, ref)
    assert other["b"]["dice"] == pytest.approx(expected_b) and other["b"]["agreement"] == pytest.approx(expected_b)
    assert other["b"]["hd95"] == pytest.approx(metrics.hd95_surface(shifted, ref, (4.0, 1.25, 1.25)))

    default, worse = bis.Setting(0.5, "off"), bis.Setting(1.0, "on")
    rows = [bis.summarise(default, base, [10.0, 12.0], [4.0, 4.0], 2, 12),
            bis.summarise(worse, other, [8.0], [5.0], 2, 6)]
    assert rows[0]["s_per_scan"] == pytest.approx(5.5) and rows[0]["net_s_per_scan"] == pytest.approx(3.5)
    assert rows[1]["passes_per_slice"] == 24 and rows[1]["net_s_per_scan"] == pytest.approx(1.5)
    mean_dice = (1 + expected_b) / 2
    assert rows[1]["dice"] == pytest.approx(mean_dice)
    table = bis.format_table(rows)
    lines = table.splitlines()
    assert len(lines) == 4 and lines[0].startswith("| setting |")
    assert "| step 0.5, mirroring off | 12 | 12 | 5.50 | 3.50 | 1.00 x | 1.0000 | +0.0000 | 0.0 | 1.0000 |" in table
    assert f"| step 1, mirroring on | 6 | 24 | 4.00 | 1.50 | 0.43 x | {mean_dice:.4f} | {mean_dice - 1:+.4f} |" in table
    assert json.loads(json.dumps(rows))  # rows are plain JSON (--json)


def test_score_folder_missing_prediction_is_an_error(tmp_path):
    from nnunet_nerve.errors import NerveError

    labels = {"a": _write(_cube(), tmp_path / "labels" / "a.nii.gz")}
    (tmp_path / "pred").mkdir()
    with pytest.raises((NerveError, RuntimeError, OSError)):
        bis.score_folder(tmp_path / "pred", labels)


def test_mirrored_model_copy_sets_axes_and_leaves_the_original(tmp_path):
    import torch

    model = tmp_path / "results" / "Dataset900_X" / "FCDenseNetTrainer_demo__nnUNetPlans__2d"
    (model / "fold_0").mkdir(parents=True)
    plans = {"configurations": {"2d": {"patch_size": [64, 64]}}}
    (model / "plans.json").write_text(json.dumps(plans))
    (model / "dataset.json").write_text("{}")
    (model / "dataset_fingerprint.json").write_text("{}")
    torch.save({"trainer_name": "FCDenseNetTrainer_demo", "inference_allowed_mirroring_axes": None,
                "network_weights": {"w": torch.ones(2)}}, model / "fold_0" / "checkpoint_final.pth")

    copy = bis.mirrored_model_copy(model, tmp_path / "mirrored", "Dataset900_X")
    assert copy == tmp_path / "mirrored" / "Dataset900_X" / model.name
    new = torch.load(copy / "fold_0" / "checkpoint_final.pth", weights_only=False)
    old = torch.load(model / "fold_0" / "checkpoint_final.pth", weights_only=False)
    assert new["inference_allowed_mirroring_axes"] == (0, 1) and old["inference_allowed_mirroring_axes"] is None
    assert torch.equal(new["network_weights"]["w"], old["network_weights"]["w"])
    assert json.loads((copy / "plans.json").read_text()) == plans

    image = tmp_path / "img_0000.nii.gz"
    _write(np.zeros((3, 128, 144)), image)
    assert bis.model_tiles_per_slice(image, copy / "plans.json", 0.5) == 3 * 4
    assert bis.model_tiles_per_slice(image, copy / "plans.json", 1.0) == 2 * 3


def test_planned_tile_model_copy_sets_the_planned_patch(tmp_path):
    """The copy's plans.json carries nnU-Net's planned patch rounded up to multiples of 16
    (one tile per slice here), the checkpoint is the same file, the original is untouched."""
    import torch

    model = tmp_path / "results" / "Dataset900_X" / "FCDenseNetTrainer_demo__nnUNetPlans__2d"
    (model / "fold_0").mkdir(parents=True)
    plans = {"configurations": {"2d": {"patch_size": [64, 64], "batch_size": 8}}}
    (model / "plans.json").write_text(json.dumps(plans))
    (model / "dataset.json").write_text("{}")
    (model / "dataset_fingerprint.json").write_text("{}")
    torch.save({"network_weights": {"w": torch.ones(2)}}, model / "fold_0" / "checkpoint_final.pth")
    planned = tmp_path / "nnUNetPlans.json"
    planned.write_text(json.dumps({"configurations": {"2d": {"patch_size": [128, 137]}}}))

    copy = bis.planned_tile_model_copy(model, tmp_path / "planned", "Dataset900_X", planned)
    saved = json.loads((copy / "plans.json").read_text())["configurations"]["2d"]
    assert saved == {"patch_size": [128, 144], "batch_size": 8}
    assert json.loads((model / "plans.json").read_text()) == plans
    assert (copy / "fold_0" / "checkpoint_final.pth").read_bytes() == \
        (model / "fold_0" / "checkpoint_final.pth").read_bytes()
    image = tmp_path / "img_0000.nii.gz"
    _write(np.zeros((3, 128, 144)), image)
    assert bis.model_tiles_per_slice(image, copy / "plans.json", 0.5) == 1
    setting = bis.Setting(0.5, "off", "planned")
    assert setting.name == "step 0.5, mirroring off, planned patch" and setting.folder.endswith("_planned")
    assert "--disable_tta" in bis.predict_command(Path("in"), Path("out"), "Dataset900_X", setting)


def test_settings_and_commands():
    settings = bis.settings_from([1.0, 0.5], ["on", "off"])
    assert settings[0] == bis.Setting(0.5, "off") and len(settings) == 4 and len(set(settings)) == 4
    off = bis.predict_command(Path("in"), Path("out"), "Dataset900_X", bis.Setting(0.75, "off"))
    on = bis.predict_command(Path("in"), Path("out"), "Dataset900_X", bis.Setting(0.75, "on"), resume=True)
    assert "--disable_tta" in off and "--disable_tta" not in on and "--continue_prediction" in on
    assert off[off.index("-step_size") + 1] == "0.75" and off[off.index("-tr") + 1] == "FCDenseNetTrainer_demo"


def test_inference_settings_refuses_a_folder_without_a_trained_demo(tmp_path):
    with pytest.raises(SystemExit, match="checkpoint_final.pth not found"):
        bis.demo_inputs(tmp_path)
