"""Verbs `biomarkers` (CSA, signal, volume, lesion burden along the nerve) and
`postprocess` (keep the physiological nerve tube)."""
from __future__ import annotations

import argparse

from nnunet_nerve import api
from nnunet_nerve.biomarkers.lesions import EXTENTS
from nnunet_nerve.app.commands import call, default


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "biomarkers", help="nerve biomarkers: CSA and signal along the nerve, volume, lesion burden",
        description="Per slice: cross-sectional area (raw and corrected for the centreline's obliquity), the parts "
                    "of the nerve (sciatic trunk, tibial and peroneal branches, each followed through the stack) and "
                    "normalised T2 signal; per scan: volume, length, mean/max CSA and lesion burden, each part "
                    "judged against a reference of the same part. The mask is post-processed first (as `postprocess` "
                    "does) unless --no-postprocess; output and summary.json say which mask was measured and what "
                    "post-processing removed (a mask that `postprocess` or `segment` wrote keeps the slices they "
                    "interpolated: postprocessing_nerve.json beside it). Writes slices.csv, summary.json, profile.png "
                    "and mip.png per scan (definitions: docs/biomarkers.md). One scan: --image T2 --mask SEG "
                    "--out DIR. A batch: "
                    "--masks FOLDER --dataset DIR_OR_ID --out DIR (one sub-folder per case and cases.csv).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    one = p.add_argument_group("one scan")
    one.add_argument("--image", help="the T2 image (file or DICOM folder)")
    one.add_argument("--mask", help="the binary nerve segmentation (0/1) on the image's grid")
    batch = p.add_argument_group("a batch")
    batch.add_argument("--masks", help="folder of segmentations named <case>.nii.gz (e.g. nnUNetv2_predict output)")
    batch.add_argument("--dataset", help="where the images are: a converted dataset (folder, id or "
                                         "Dataset<ID>_<NAME>; imagesTr/<case>_0000.nii.gz) or a registry folder")
    p.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument("--reference", help="normative lesion reference: the volunteers of a converted dataset "
                                       "(folder, id or name) or registry, kept per thigh location, or a "
                                       "reference.json written before; default: the subject's own nerve")
    p.add_argument("--location", choices=("distal", "medial", "proximal"),
                   help="one scan: its thigh location, to pick the matching normative reference (a batch takes it "
                        "from participants.tsv); unknown: the reference pooled over every location")
    p.add_argument("--side", choices=("left", "right"),
                   help="the imaged leg; names the branches by position (peroneal = lateral) instead of by volume "
                        "(peroneal = smaller)")
    add_options(p, api.biomarkers, [
        ("--k", float, "lesion threshold: centre + k x spread (the slice-to-slice noise, or the reference's spread) ..."),
        ("--min-excess", float, "... and at least centre x (1 + this)"),
        ("--min-lesion-slices", int, "a lesion spans at least this many consecutive slices above threshold (shorter "
                                     "runs are reported as isolated outliers)")])
    p.add_argument("--lesion-extent", choices=EXTENTS, default=default(api.biomarkers, "lesion_extent"),
                   help="where a lesion lies: its full width at half maximum against the subject's own nerve, or "
                        "its run of slices above threshold (a normative reference always uses the run)")
    add_options(p, api.biomarkers, [
        ("--min-lesion-separation", int, "with the half-maximum extent, lesion segments fewer than this many nerve "
                                         "slices apart are one swelling: the longer is the lesion, the other is listed "
                                         "in secondary_segments (1: keep all)")])
    p.add_argument("--postprocess", action=argparse.BooleanOptionalAction,
                   default=default(api.biomarkers, "postprocess"),
                   help="post-process the mask first (keep the nerve tube, drop look-alikes, fill gaps of missed "
                        "slices; as `postprocess` does, with the options below); --no-postprocess measures the mask "
                        "as it is")
    add_postprocess_options(p.add_argument_group("post-processing (as `nnunet-nerve postprocess`)"))
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=_biomarkers)

    q = sub.add_parser(
        "postprocess", help="keep the physiological nerve: one tube that may split in two; fill gaps of missed slices",
        description="Drop 3D components that are not part of the nerve tube (short blobs such as a segmented vein), "
                    "keep long branches near it, remove small side pieces touching it (a vessel, not a branch) "
                    "and fill gaps of missed slices by shape-based interpolation; the output post-processed "
                    "again is unchanged (rule: docs/biomarkers.md). IN and OUT are files, or folders of masks such as the output of "
                    "nnUNetv2_predict (the folder's .json files are copied; postprocessing_nerve.json records "
                    "what changed).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    q.add_argument("input", metavar="IN", help="a mask file or a folder of mask files")
    q.add_argument("output", metavar="OUT", help="the output file or folder")
    add_postprocess_options(q)
    q.add_argument("--overwrite", action="store_true", help="replace an existing output")
    q.set_defaults(func=_postprocess)


def add_postprocess_options(parser) -> None:
    """``postprocess``'s rule options (defaults from ``api.postprocess``), for every verb that
    post-processes: postprocess, biomarkers, segment."""
    add_options(parser, api.postprocess, [
        ("--min-extent", float, "keep a component not bridged to the main tube only if its z-extent is at least this "
                                "fraction of the tube's"),
        ("--max-branch-distance", float, "... and it lies within this many mm of the tube"),
        ("--max-gap", int, "fill gaps of up to this many missed slices"),
        ("--side-fraction", float, "remove side pieces smaller than this fraction of their slice's largest piece on "
                                   "two or more consecutive slices (a vessel touching the nerve); 0 keeps them")])


def add_options(parser, function, options) -> None:
    """``(flag, type, help)`` options whose defaults are ``function``'s parameters of the same
    name (``--max-gap`` -> ``max_gap``)."""
    for flag, kind, text in options:
        parser.add_argument(flag, type=kind, default=default(function, flag[2:].replace("-", "_")), help=text)


def _biomarkers(args) -> int:
    call(api.biomarkers, args, progress=print)
    print(f"wrote {args.out}")
    return 0


def _postprocess(args) -> int:
    from nnunet_nerve.biomarkers.postprocess import PostprocessResult
    from nnunet_nerve.biomarkers.postprocess_record import sidecar_path

    result = call(api.postprocess, args, progress=print)
    single = isinstance(result, PostprocessResult)  # a file; a folder's report is inside it
    print(f"wrote {args.output}" + (f" and its report {sidecar_path(args.output)}" if single else ""))
    return 0
