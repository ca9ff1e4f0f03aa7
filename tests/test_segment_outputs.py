"""`segment`'s stages after the network (``segment_from_prediction``) on a synthetic DICOM series: the
paths it returns are what it wrote; an existing OUT is replaced only with overwrite; a failure half-way
leaves neither OUT nor a temporary folder."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_nerve.errors import NerveError
from dicom_series_cases import SYNTHETIC, write_synthetic_series

MODEL_INFO = {"folder": "(test)", "trainer": "FCDenseNetTrainer", "plans": "nnUNetPlans", "configuration": "2d",
              "folds": [0], "patch_size": [24, 30], "tile_step_size": 0.5, "mirroring_axes": None}


@pytest.fixture
def scan_and_mask(tmp_path):
    from nnunet_nerve.segmentation.segment import read_input

    direction, order = SYNTHETIC["axial"]
    scan = read_input(write_synthetic_series(tmp_path / "series", direction, order))
    mask = np.zeros(sitk.GetArrayViewFromImage(scan.image).shape, dtype=bool)
    mask[:, 10:14, 12:16] = True           # a tube through every slice
    mask[3, 2:4, 25:27] = True             # a blob post-processing removes
    return scan, mask



def test_slices_filled_by_postprocessing_are_marked_interpolated(scan_and_mask, tmp_path):
    """A missed slice (4) in the tube: post-processing fills it, and the biomarkers' slices.csv
    marks it (and only it) interpolated, as `nnunet-nerve biomarkers` does; OUT's
    postprocessing_nerve.json records it, so `biomarkers` of segmentation.nii.gz marks it too."""
    from conftest import read_csv
    from nnunet_nerve.biomarkers.measures import biomarkers_from_files
    from nnunet_nerve.segmentation.segment import segment_from_prediction

    scan, mask = scan_and_mask
    mask[4] = False
    result = segment_from_prediction(scan, mask, tmp_path / "out", MODEL_INFO)
    rows = read_csv(result.paths["biomarkers"] / "slices.csv")
    assert [int(r["slice"]) for r in rows if r["interpolated"] in ("True", "true", "1")] == [4]
    again = biomarkers_from_files(scan.path, result.paths["segmentation"])
    assert again.summary["postprocessing"]["filled_slices"] == []
    assert again.summary["earlier_postprocessing"]["slices"] == [4]
    assert [r["slice"] for r in again.slices if r["interpolated"]] == [4]

def test_paths_returned_are_the_files_written(scan_and_mask, tmp_path):
    from nnunet_nerve.segmentation.segment import segment_from_prediction

    scan, mask = scan_and_mask
    out = tmp_path / "out"
    result = segment_from_prediction(scan, mask, out, MODEL_INFO)
    assert {p.name for p in out.iterdir()} == {p.name for p in result.paths.values()}
    assert set(result.paths) == {"segmentation", "dicom_seg", "biomarkers", "report", "record", "postprocessing"}
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(result.paths["segmentation"])))
    assert written.sum() == 7 * 16 and written[3, 2:4, 25:27].sum() == 0
    record = json.loads(result.paths["record"].read_text())
    flags = {f["name"]: f for f in record["flags"]}
    assert flags["postprocessing"]["raised"] and "removed 1 of 2 component(s) (4 voxels" in \
        flags["postprocessing"]["message"]
    assert list(record["timings_s"]) == ["post-process", "biomarkers", "write segmentation", "report"]


def test_existing_output_is_replaced_only_with_overwrite(scan_and_mask, tmp_path):
    from nnunet_nerve.segmentation.segment import segment_from_prediction

    scan, mask = scan_and_mask
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(NerveError, match="already exists"):
        segment_from_prediction(scan, mask, out, MODEL_INFO)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    segment_from_prediction(scan, mask, out, MODEL_INFO, overwrite=True)
    assert not (out / "mine.txt").exists() and (out / "segmentation.dcm").is_file()


def test_a_failure_half_way_leaves_nothing(scan_and_mask, tmp_path, monkeypatch):
    import nnunet_nerve.segmentation.report as report
    from nnunet_nerve.segmentation.segment import segment_from_prediction

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(report, "write_report", broken)
    scan, mask = scan_and_mask
    with pytest.raises(OSError, match="disk full"):
        segment_from_prediction(scan, mask, tmp_path / "out", MODEL_INFO)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]


def test_a_normative_reference_reaches_the_flag_the_report_and_reference_json(scan_and_mask, tmp_path):
    """The per-region NormativeReference of `biomarkers` through segment's stages: lesion
    thresholds, the csa_reference flag and biomarkers/reference.json (which loads back)."""
    from nnunet_nerve.biomarkers.references import NormativeReference
    from nnunet_nerve.segmentation.segment import segment_from_prediction

    scan, mask = scan_and_mask
    trunk = {"cases": ["a", "b", "c"], "slices": 30, "csa_centre_mm2": 1.0, "csa_spread_mm2": 0.1,
             "signal_centre": 1.0, "signal_spread": 0.1}
    reference = NormativeReference("test volunteers", {"all": ["a", "b", "c"]}, {"all": {"sciatic": trunk}})
    result = segment_from_prediction(scan, mask, tmp_path / "out", MODEL_INFO, reference=reference)
    flags = {f["name"]: f for f in result.record["flags"]}
    # the 4 x 4-pixel tube is far above a 1 mm² trunk: every nerve slice is above the range
    assert flags["csa_reference"]["raised"], flags["csa_reference"]["message"]
    assert "7 nerve slice(s) with a part above and 0 with a part below" in flags["csa_reference"]["message"]
    saved = NormativeReference.from_json_file(result.paths["biomarkers"] / "reference.json")
    assert saved.regions == reference.regions
    report = result.paths["report"].read_text()
    assert "normative reference" in report and "with a part above" in report


def test_a_coronal_series_is_refused_before_anything_is_written(tmp_path):
    """A series whose slices are coronal (SYNTHETIC's negative cosines: the slices' normal along
    anterior-posterior) cuts a thigh nerve lengthwise: no CSA per slice, so `segment` refuses it
    (before predicting; here the stages after the network) naming the series, and writes nothing."""
    from nnunet_nerve.segmentation.segment import read_input, segment_from_prediction

    direction, order = SYNTHETIC["negative_cosines"]
    scan = read_input(write_synthetic_series(tmp_path / "series", direction, order))
    mask = np.zeros(sitk.GetArrayViewFromImage(scan.image).shape, dtype=bool)
    mask[:, 10:14, 12:16] = True
    with pytest.raises(NerveError, match=r"series: the slices are coronal \(their normal is 90 degrees"):
        segment_from_prediction(scan, mask, tmp_path / "out", MODEL_INFO)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]
