"""The nerve segmentation as a DICOM Segmentation (binary, one segment) with highdicom.

Frame ``k`` of the mask (z, y, x on the grid of ``DicomSeries.read_image``) belongs to the
source instance ``series.datasets[k]``: its rows and columns are that instance's pixel
matrix. The SEG references the source series and every source instance (Referenced Series
Sequence; each frame's Derivation Image Sequence names its source instance), shares the
source's Frame of Reference UID and carries its patient and study. Empty frames are left
out (all frames are kept when the whole mask is empty). The segment is coded with SNOMED CT:

* Segmented Property Category: (91723000, SCT, "Anatomical Structure"), CID 7150;
* Segmented Property Type: (84782009, SCT, "Peripheral nerve"), CID 7151
  (the DICOM code dictionaries have no concept for the sciatic nerve itself; the label says it);

both as pydicom's code dictionary (``pydicom.sr.codedict.codes``) defines them. The
algorithm identification names this package, its version, the nnU-Net trainer,
configuration and folds; the algorithm family is (123110, DCM, "Artificial Intelligence").

An anonymised source that lacks type 2 patient or study attributes (Patient's Name, Patient
ID, ...) gives a SEG with those attributes present and empty (value unknown), as the DICOM
standard requires them present.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_nerve.errors import NerveError

SEGMENT_LABEL = "Sciatic nerve"
#: Type 2 attributes of the Patient and General Study modules that highdicom copies from the source.
PATIENT_STUDY_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                       "ReferringPhysicianName", "AccessionNumber", "StudyID")
#: Recommended display colour (CIELab, DICOM scaled): a saturated yellow, visible on grey MR.
DISPLAY_RGB = (255, 220, 0)
SERIES_NUMBER_OFFSET = 1000


def nerve_codes():
    """(category, type) of the nerve segment, from pydicom's code dictionary."""
    from pydicom.sr.codedict import codes

    return codes.SCT.AnatomicalStructure, codes.SCT.PeripheralNerve


@dataclass(frozen=True)
class Algorithm:
    """What made the segmentation: goes into the SEG's Segmentation Algorithm Identification."""

    trainer: str
    configuration: str
    folds: tuple
    plans: str = "nnUNetPlans"
    postprocessed: bool = True

    def parameters(self) -> dict:
        return {"trainer": self.trainer, "plans": self.plans, "configuration": self.configuration,
                "folds": " ".join(str(f) for f in self.folds),
                "postprocessing": "nerve tube" if self.postprocessed else "none"}


def _source_headers(series) -> list:
    """Shallow copies of the source headers with absent type 2 patient/study attributes added empty."""
    out = []
    for ds in series.datasets:
        copy = ds.copy()
        for keyword in PATIENT_STUDY_TYPE2:
            if keyword not in copy:
                setattr(copy, keyword, "")
        out.append(copy)
    return out


def build_segmentation(series, mask: np.ndarray, algorithm: Algorithm):
    """The highdicom Segmentation of ``mask`` (bool or 0/1, shape (slices, rows, columns)) over ``series``."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from nnunet_nerve import __version__

    mask = np.asarray(mask)
    first = series.datasets[0]
    expected = (len(series.datasets), int(first.Rows), int(first.Columns))
    if mask.shape != expected:
        raise NerveError(f"{series.folder}: mask shape {mask.shape} does not match the series "
                         f"(slices, rows, columns) {expected}")
    category, property_type = nerve_codes()
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=category,
        segmented_property_type=property_type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="nnunet-nerve FC-DenseNet" if algorithm.trainer.startswith("FCDenseNet") else "nnunet-nerve",
            family=codes.DCM.ArtificialIntelligence,
            version=__version__,
            source="nnunet-nerve",
            parameters=algorithm.parameters()),
        display_color=hd.color.CIELabColor.from_rgb(*DISPLAY_RGB),
    )
    source_number = first.get("SeriesNumber")
    series_number = SERIES_NUMBER_OFFSET + (int(source_number) if source_number not in (None, "") else 0)
    return hd.seg.Segmentation(
        source_images=_source_headers(series),
        pixel_array=(mask > 0).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="nnunet-nerve",
        manufacturer_model_name=algorithm.trainer[:64],
        software_versions=__version__,
        device_serial_number="none",
        content_label="NERVE",
        content_description=f"{SEGMENT_LABEL} ({algorithm.trainer}, folds {' '.join(map(str, algorithm.folds))})"[:64],
        series_description=f"{SEGMENT_LABEL} segmentation (nnunet-nerve)",
        omit_empty_frames=bool(mask.any()),
    )


def write_dicom_seg(series, mask: np.ndarray, path: "str | os.PathLike", algorithm: Algorithm) -> Path:
    """Write the SEG of ``mask`` over ``series`` to ``path`` (the caller makes it atomic)."""
    path = Path(path)
    build_segmentation(series, mask, algorithm).save_as(str(path))
    return path
