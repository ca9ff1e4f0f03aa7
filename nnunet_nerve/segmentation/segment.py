"""`nnunet-nerve segment`: a scan (a DICOM series folder or an image file) and a trained model folder
in; the segmentation, its DICOM SEG, the biomarkers and a one-page report out.

Stages (each timed; the times go into the report and segment.json):

1. read the input: a folder holding DICOM series (``dicom_series``: one series, or the one
   chosen by UID; checked for missing and repeated slices), or a .nii.gz/.nii/.mha/.nrrd file;
2. load the model through nnU-Net's ``nnUNetPredictor`` (``nnunet_inference``);
3. predict: the same label map as ``nnUNetv2_predict`` for this image and folds;
4. post-process (default on): ``postprocess.postprocess_nerve``, the nerve-tube rule;
5. biomarkers: ``biomarkers.nerve_biomarkers`` over the image, written as
   ``nnunet-nerve biomarkers`` writes them (``biomarker_report.write_case_report``);
6. write the NIfTI and, for DICOM input, the DICOM SEG (``dicom_seg``);
7. the report (``segment_report``).

OUT holds ``segmentation.nii.gz`` (uint8 0/1 on the input's grid), ``segmentation.dcm`` (DICOM
input only), ``biomarkers/`` (slices.csv, summary.json, profile.png, mip.png; reference.json
with a normative reference), ``report.html``, ``segment.json`` (input, model, stage
times, quality flags, outputs) and, when post-processing ran, ``postprocessing_nerve.json``
(as ``postprocess`` writes for a folder: ``postprocess_record``), so that measuring
segmentation.nii.gz again knows the slices post-processing interpolated. Everything is
checked (OUT, the model folder, the input) before any prediction, written into a temporary
sibling of OUT and moved into place at the end; OUT is replaced only with ``overwrite`` and
may never be, contain or lie inside an input.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from nnunet_nerve.errors import NerveError

if TYPE_CHECKING:
    from nnunet_nerve.biomarkers.postprocess import PostprocessRule

NIFTI_NAME = "segmentation.nii.gz"
SEG_NAME = "segmentation.dcm"
BIOMARKERS_DIR = "biomarkers"
REPORT_NAME = "report.html"
RECORD_NAME = "segment.json"
Log = Optional[Callable[[str], None]]


@dataclass
class SegmentResult:
    """What `segment` wrote (final paths) and measured."""

    out: Path
    paths: dict
    timings_s: dict
    flags: list
    record: dict = field(repr=False)

    @property
    def nerve_found(self) -> bool:
        return bool(self.record["biomarkers"]["nerve_found"])


class _Stages:
    """Times named stages and prints one progress line per stage."""

    def __init__(self, total: int, log: Log):
        self.total, self.log, self.times, self._i = total, log, {}, 0

    def run(self, name: str, fn, *args, **kwargs):
        self._i += 1
        if self.log:
            self.log(f"[{self._i}/{self.total}] {name} ...")
        start = time.perf_counter()
        value = fn(*args, **kwargs)
        self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start
        if self.log:
            self.log(f"[{self._i}/{self.total}] {name}: {self.times[name]:.1f} s")
        return value


@dataclass
class ScanInput:
    """The scan read by ``read_input``: its path, kind, SimpleITK image and, for DICOM, the series."""

    path: Path
    kind: str               # "dicom" or "file"
    image: object           # SimpleITK image
    series: object = None   # dicom_series.DicomSeries for DICOM input

    def metadata(self) -> dict:
        """Path, kind, size, spacing, origin, direction (and the DICOM series' uid, description, slices)."""
        out = {"path": str(self.path.resolve()), "kind": "DICOM series" if self.kind == "dicom" else "image file",
               "size": list(self.image.GetSize()), "spacing": list(self.image.GetSpacing()),
               "origin": list(self.image.GetOrigin()), "direction": list(self.image.GetDirection())}
        if self.series is not None:
            out.update(series_uid=self.series.series_uid, series_description=self.series.description,
                       slices=len(self.series.files))
        return out


def read_input(path: "str | os.PathLike", series_uid: "str | None" = None, log: Log = None) -> ScanInput:
    """The input scan: a DICOM series folder or an image file (3D, one channel)."""
    from nnunet_nerve.io.images import IMAGE_SUFFIXES, has_image_suffix, read_volume

    path = Path(path)
    if path.is_dir():
        from nnunet_nerve.io.dicom_series import read_series

        series = read_series(path, series_uid, log)
        return ScanInput(path, "dicom", series.read_image(), series)
    if series_uid is not None:
        raise NerveError(f"{path}: --series chooses a series in a DICOM folder; the input is a file")
    if not path.exists():
        raise NerveError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".dcm" or (not has_image_suffix(path) and _is_dicom_file(path)):
        raise NerveError(f"{path}: a single DICOM file; give the folder that holds the whole series")
    if not has_image_suffix(path):
        raise NerveError(f"{path}: not an image file ({', '.join(IMAGE_SUFFIXES)}) or a DICOM series folder")
    return ScanInput(path, "file", read_volume(path))


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def segment(input_path: "str | os.PathLike", out: "str | os.PathLike", model: "str | os.PathLike", *,
            folds=None, device: str = "cpu", postprocess: "bool | PostprocessRule" = True,
            series_uid: "str | None" = None,
            reference=None, side: "str | None" = None, mirroring: bool = True, overwrite: bool = False,
            log: Log = None, progress_bar: bool = False) -> SegmentResult:
    """Segment one scan with a trained model folder into OUT (see the module docstring).

    ``folds``: fold numbers (or "all"); default every fold with a checkpoint. ``reference``:
    a normative lesion reference as ``nnunet-nerve biomarkers --reference`` takes it (a
    converted dataset, registry or reference.json), for the lesion thresholds and the CSA
    quality flag. ``side``: the imaged leg (names the branches). ``postprocess``: True (the
    default ``PostprocessRule``), a ``PostprocessRule``, or False (keep the prediction as it
    is). ``mirroring``: test-time
    mirroring where the checkpoint allows it (nnUNetv2_predict's default). Returns the
    final paths written, the stage times and the quality flags.
    """
    from nnunet_nerve.io.atomic import refuse_existing, refuse_output_overlap
    from nnunet_nerve.io.images import require_axial_slices
    from nnunet_nerve.segmentation.predictor import check_model_folder, model_description, torch_device

    out = Path(out)
    input_path = Path(input_path)
    refuse_output_overlap(out, {"input": input_path, "model folder": model,
                                "reference": reference if isinstance(reference, (str, os.PathLike)) else None})
    if out.exists() and not out.is_dir():
        raise NerveError(f"{out}: exists and is not a folder")
    refuse_existing(out, overwrite, "output folder")
    if not input_path.exists():
        raise NerveError(f"{input_path}: no such file or folder")
    model_folder = check_model_folder(model, folds)
    torch_device(device)
    if side not in (None, "left", "right"):
        raise NerveError(f"side must be 'left' or 'right', not {side!r}")

    stages = _Stages(7 + (reference is not None), log)
    reference_obj = None
    if reference is not None:
        reference_obj = stages.run("normative reference", _reference, reference, log)
    source = stages.run("read input", read_input, input_path, series_uid, log)
    require_axial_slices(source.image, input_path)  # before the prediction, not only before the biomarkers
    if log:
        size = source.image.GetSize()
        log(f"    {source.metadata()['kind']}: {size[0]} x {size[1]} x {size[2]} voxels")
    predictor = stages.run("load model", _load, model_folder, device, mirroring, progress_bar)
    raw = stages.run("predict", _predict, predictor, source.image, device)
    return segment_from_prediction(source, raw, out, model_description(model_folder, predictor),
                                   postprocess=postprocess, reference=reference_obj, side=side, device=device,
                                   overwrite=overwrite, log=log, _stages=stages)


def segment_from_prediction(source: ScanInput, raw: np.ndarray, out: "str | os.PathLike", model_info: dict, *,
                            postprocess: "bool | PostprocessRule" = True, reference=None,
                            side: "str | None" = None,
                            device: str = "cpu", overwrite: bool = False, log: Log = None,
                            _stages: "_Stages | None" = None) -> SegmentResult:
    """The stages after the network: post-process the predicted mask ``raw`` (z, y, x on
    ``source.image``'s grid), compute the biomarkers and write OUT (module docstring).
    ``model_info`` is ``nnunet_inference.model_description``'s dict; ``reference`` a
    ``NormativeReference`` or None. `segment` calls it after predicting."""
    from nnunet_nerve.io.atomic import atomic_directory
    from nnunet_nerve.io.images import require_axial_slices
    from nnunet_nerve.biomarkers.report import write_json

    out = Path(out)
    require_axial_slices(source.image, source.path)
    stages = _stages or _Stages(4, log)
    mask, pp = stages.run("post-process", _postprocess, np.asarray(raw, dtype=bool), source.image, postprocess)
    biomarkers = stages.run("biomarkers", _biomarkers, source.image, mask, reference, side,
                            pp.filled_slices if pp else ())
    with atomic_directory(out, overwrite) as tmp:
        written = stages.run("write segmentation", _write_segmentation, tmp, source, mask, model_info, pp,
                             biomarkers, reference, side)
        record = _record(source, model_info, device, stages.times, mask, pp, biomarkers, reference,
                         written, out)
        stages.run("report", _write_report, tmp, record, source, raw, mask, pp)
        record["timings_s"] = dict(stages.times)
        write_json(tmp / RECORD_NAME, record)
    paths = {name: out / rel for name, rel in written.items()}
    paths.update(report=out / REPORT_NAME, record=out / RECORD_NAME)
    if log:
        total = sum(stages.times.values())
        log(f"segmented in {total:.1f} s ({', '.join(f'{k} {v:.1f} s' for k, v in stages.times.items())})")
        for flag in record["flags"]:
            if flag["raised"]:
                log(f"warning: {flag['message']}")
    return SegmentResult(out, paths, dict(stages.times), record["flags"], record)


# ----------------------------------------------------------------------------- stages

def _load(model_folder, device, mirroring, progress_bar):
    from nnunet_nerve.segmentation.predictor import load_predictor

    return load_predictor(model_folder, device, mirroring, progress_bar)


def _predict(predictor, image, device) -> np.ndarray:
    from nnunet_nerve.segmentation.predictor import predict_image

    labels = predict_image(predictor, image, device)
    if labels.max(initial=0) > 1:
        raise NerveError(f"the model predicted labels {np.unique(labels).tolist()}; expected 0 and 1")
    return labels.astype(bool)


def _postprocess(raw: np.ndarray, image, rule: "bool | PostprocessRule"):
    from nnunet_nerve.io.images import spacing_zyx
    from nnunet_nerve.biomarkers.postprocess import postprocess_nerve, rule_of

    cleaning = rule_of(rule)
    if not cleaning:
        return raw, None
    result = postprocess_nerve(raw, spacing_zyx(image), cleaning)
    return result.mask, result


def _reference(reference, log):
    from nnunet_nerve.biomarkers.sources import load_reference

    return load_reference(reference, log=log)


def _biomarkers(image, mask, reference_obj, side, interpolated=()):
    import SimpleITK as sitk

    from nnunet_nerve.biomarkers.measures import lateral_vector, nerve_biomarkers
    from nnunet_nerve.io.images import spacing_zyx

    return nerve_biomarkers(mask, spacing_zyx(image), sitk.GetArrayFromImage(image),
                            lateral_xy=lateral_vector(image.GetDirection(), side), reference=reference_obj,
                            interpolated=interpolated)


def write_masks(folder: "str | os.PathLike", source: ScanInput, mask: np.ndarray, algorithm) -> dict:
    """The geometry path: ``mask`` (z, y, x on ``source.image``'s grid) into ``folder`` as
    segmentation.nii.gz (uint8 0/1, the input's grid) and, for DICOM input,
    segmentation.dcm (``dicom_seg.write_dicom_seg`` with ``algorithm``, a ``dicom_seg.Algorithm``).
    Returns {name: path relative to folder}."""
    import SimpleITK as sitk

    from nnunet_nerve.io.images import write_image

    folder = Path(folder)
    mask = np.asarray(mask)
    if mask.shape != sitk.GetArrayViewFromImage(source.image).shape:
        raise NerveError(f"mask shape {mask.shape} differs from the input's "
                         f"{sitk.GetArrayViewFromImage(source.image).shape}")
    nifti = sitk.GetImageFromArray((mask > 0).astype(np.uint8))
    nifti.CopyInformation(source.image)
    write_image(nifti, folder / NIFTI_NAME)
    written = {"segmentation": Path(NIFTI_NAME)}
    if source.series is not None:
        from nnunet_nerve.dicom.seg import write_dicom_seg

        write_dicom_seg(source.series, mask, folder / SEG_NAME, algorithm)
        written["dicom_seg"] = Path(SEG_NAME)
    return written


def _write_segmentation(tmp: Path, source: ScanInput, mask, model_info: dict, pp, biomarkers, reference_obj,
                        side) -> dict:
    """``write_masks`` and biomarkers/ into ``tmp``; {name: relative path}."""
    from nnunet_nerve.biomarkers.report import write_case_report, write_json
    from nnunet_nerve.dicom.seg import Algorithm

    algorithm = Algorithm(trainer=model_info["trainer"], configuration=model_info["configuration"],
                          folds=tuple(model_info["folds"]), plans=model_info["plans"], postprocessed=pp is not None)
    written = write_masks(tmp, source, mask, algorithm)
    if pp is not None:
        from nnunet_nerve.biomarkers.postprocess_record import REPORT_NAME as POSTPROCESSING_NAME, folder_report, \
            report_entry

        write_json(tmp / POSTPROCESSING_NAME, folder_report(pp.rule, {NIFTI_NAME: report_entry(pp, None)}))
        written["postprocessing"] = Path(POSTPROCESSING_NAME)
    biomarkers.summary = {"image": str(source.path.resolve()), "mask": NIFTI_NAME, "side": side,
                          "postprocessing": pp.as_dict() if pp else None, **biomarkers.summary}
    (tmp / BIOMARKERS_DIR).mkdir()
    write_case_report(tmp / BIOMARKERS_DIR, biomarkers, source.path.name)
    if reference_obj is not None:
        write_json(tmp / BIOMARKERS_DIR / "reference.json", reference_obj.to_json())
    written["biomarkers"] = Path(BIOMARKERS_DIR)
    return written


def _record(source: ScanInput, model_info: dict, device: str, timings: dict, mask, pp, biomarkers,
            reference_obj, written: dict, out: Path) -> dict:
    from nnunet_nerve import __version__
    from nnunet_nerve.io.images import default_geometry_problem, spacing_zyx
    from nnunet_nerve.segmentation.quality import quality_flags

    flags = quality_flags(mask, spacing_zyx(source.image), pp, biomarkers, reference_obj,
                          geometry_problem=default_geometry_problem(source.image))
    return {
        "version": __version__,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "input": source.metadata(),
        "model": model_info,
        "device": device,
        "postprocess": pp is not None,
        "postprocessing": pp.as_dict() if pp else None,
        "timings_s": dict(timings),
        "flags": [f.as_dict() for f in flags],
        "biomarkers": biomarkers.summary,
        "outputs": {name: str(out / rel) for name, rel in {**written, "report": Path(REPORT_NAME),
                                                           "record": Path(RECORD_NAME)}.items()},
    }


def _write_report(tmp: Path, record: dict, source: ScanInput, raw, mask, pp) -> None:
    import SimpleITK as sitk

    from nnunet_nerve.io.images import spacing_zyx
    from nnunet_nerve.segmentation.report import write_report

    removed = (raw & ~mask) if pp is not None else None
    write_report(tmp / REPORT_NAME, record, sitk.GetArrayFromImage(source.image), mask, removed,
                 spacing_zyx(source.image), tmp / BIOMARKERS_DIR)
