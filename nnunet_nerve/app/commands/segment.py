"""Verb `segment`: a scan (DICOM series or image file) and a trained model in; segmentation,
DICOM SEG, biomarkers and report out."""
from __future__ import annotations

import argparse
import sys

from nnunet_nerve import api
from nnunet_nerve.app.commands import call, default
from nnunet_nerve.app.commands.biomarkers import add_postprocess_options


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "segment", help="segment a new scan with a trained model: NIfTI + DICOM SEG + biomarkers + report.html",
        description="Predict the nerve in INPUT (a folder holding a DICOM series, or a .nii.gz/.nii/.mha/.nrrd "
                    "image) with a trained nnU-Net model folder through nnU-Net's own predictor (the result of "
                    "nnUNetv2_predict), apply the physiological post-processing, compute the biomarkers and write "
                    "OUT/segmentation.nii.gz, OUT/segmentation.dcm (DICOM SEG, for DICOM input), OUT/biomarkers/, "
                    "OUT/report.html, OUT/segment.json and OUT/postprocessing_nerve.json (what post-processing "
                    "changed; details: docs/segment.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("input", metavar="INPUT", help="a folder holding one DICOM series, or an image file")
    p.add_argument("output", metavar="OUT", help="output folder (must not exist unless --overwrite)")
    p.add_argument("--model", "-m", required=True,
                   help="trained model folder, e.g. $nnUNet_results/Dataset042_Thigh/FCDenseNetTrainer__nnUNetPlans__2d "
                        "(as nnUNetv2_predict_from_modelfolder -m takes it)")
    p.add_argument("-f", "--folds", nargs="+", default=default(api.segment, "folds"),
                   help="folds to use (numbers or 'all'); default: every fold with checkpoint_final.pth")
    p.add_argument("--device", choices=("cpu", "cuda", "mps"), default=default(api.segment, "device"),
                   help="where the network runs")
    p.add_argument("--no-postprocess", dest="postprocess", action="store_false",
                   default=default(api.segment, "postprocess"),
                   help="skip the physiological post-processing (keep nnU-Net's prediction as is)")
    add_postprocess_options(p.add_argument_group("post-processing (as `nnunet-nerve postprocess`)"))
    p.add_argument("--series", metavar="UID", help="the Series Instance UID to segment when INPUT holds several")
    p.add_argument("--reference", help="normative reference for lesion thresholds and the CSA quality flag: a "
                                       "converted dataset or registry (its volunteers) or a reference.json")
    p.add_argument("--side", choices=("left", "right"), help="the imaged leg (names the branches by position)")
    p.add_argument("--disable-tta", action="store_true", default=default(api.segment, "disable_tta"),
                   help="no test-time mirroring (as nnUNetv2_predict --disable_tta; FCDenseNetTrainer never mirrors)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=_segment)


def _segment(args) -> int:
    result = call(api.segment, args, progress=print, progress_bar=sys.stderr.isatty())
    for name, path in result.paths.items():
        print(f"wrote {path}")
    return 0
