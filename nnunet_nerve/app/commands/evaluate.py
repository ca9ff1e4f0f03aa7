"""The `evaluate` verb: the paper's Table 1, its statistics and Figure 2 for one or more
sets of predictions (folders, or nnU-Net's cross-validation results of trainers)."""
from __future__ import annotations

import argparse
import textwrap

from nnunet_nerve import api
from nnunet_nerve.app.commands import call, default
from nnunet_nerve.evaluation.columns import HD95_DEFINITIONS

_PARAGRAPHS = (
    "Compare predictions with the consensus and with every rater of a dataset converted by "
    "`nnunet-nerve convert`, as Balsiger et al. (2018) do: Dice, HD95 (mm), volumetric similarity "
    "(plus maximum Hausdorff distance and ASSD), per cohort and, for patients, per thigh location; "
    "Mann-Whitney U of Auto-GT against the inter-rater baseline R-R; with several methods a paired "
    "Wilcoxon signed-rank test between them.",
    "Predictions come from folders of <case>.nii.gz (--pred, as nnUNetv2_predict writes them) or from "
    "nnU-Net's cross-validation results (-tr: every fold's validation/ folder of "
    "$nnUNet_results/Dataset<ID>_<NAME>/<trainer>__<plans>__<configuration>/, folds from "
    "splits_final.json).",
    "HD95 is the paper's by default: EvaluateSegmentation's HDRFDST@0.95@ (every voxel that differs, to the "
    "nearest voxel of the other mask, both directions pooled; per_case.csv column hd95_mm); the surface-based "
    "HD95 is column hd95_surface_mm, and --hd95 surface shows it in the table, figure and tests instead. Raters "
    "are reported in the dataset's order (the registry's raters.tsv, else sorted).",
    "Writes per_case.csv, table1.csv, table1.md, statistics.csv, figure2.png and timing.csv to --out "
    "(atomically; an existing --out is kept unless --overwrite). Definitions: docs/evaluation.md.",
)
_EXAMPLES = ("examples:\n"
             "  nnunet-nerve evaluate -d 42 --pred preds/ --out eval/\n"
             "  nnunet-nerve evaluate -d 42 --pred a/ --name FCDenseNet --pred b/ --name nnU-Net --out eval/\n"
             "  nnunet-nerve evaluate -d 42 -tr FCDenseNetTrainer -tr nnUNetTrainer -c 2d --out eval/\n"
             "  nnunet-nerve evaluate -d 42 -tr FCDenseNetTrainer --paper-reference --out eval/")


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="the paper's Table 1, statistics and boxplots for predictions of a converted dataset",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="\n\n".join(textwrap.fill(p, 88) for p in _PARAGRAPHS), epilog=_EXAMPLES)
    p.add_argument("-d", "--dataset", required=True, metavar="DIR_OR_ID",
                   help="converted dataset: a folder, a dataset id (42) or Dataset042_<NAME> in $nnUNet_raw")
    p.add_argument("--pred", action="append", default=[], metavar="FOLDER",
                   help="folder of predictions <case>.nii.gz; repeat for several methods")
    p.add_argument("--name", action="append", default=[], metavar="N",
                   help="name of the method of each --pred, in order (default: the folder's name)")
    p.add_argument("-tr", "--trainer", action="append", default=[], metavar="TRAINER",
                   help="nnU-Net trainer whose cross-validation predictions to gather; repeat for several")
    p.add_argument("-c", "--configuration", default=default(api.evaluate, "configuration"),
                   help="nnU-Net configuration of -tr (default: %(default)s)")
    p.add_argument("-p", "--plans", default=default(api.evaluate, "plans"),
                   help="nnU-Net plans identifier of -tr (default: %(default)s)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist unless --overwrite)")
    p.add_argument("--hd95", choices=tuple(HD95_DEFINITIONS), default=default(api.evaluate, "hd95"),
                   help="which HD95 table1.md, figure2.png and the tests in table1.md show: evaluatesegmentation "
                        "(the paper's, default) or surface; per_case.csv and statistics.csv always hold both")
    p.add_argument("--paper-reference", action="store_true",
                   help="also show in table1.md the values Balsiger et al. (2018) published, beside ours, "
                        "with their source")
    p.add_argument("--allow-missing", action="store_true",
                   help="evaluate the cases that have predictions; the table lists what was left out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--biomarkers", action="store_true",
                   help="also the biomarker agreement: nerve volume and mean CSA of each method (post-processed) and "
                        "each rater against the consensus, Bland-Altman, in --out/biomarker_agreement/ "
                        "(docs/biomarkers.md)")
    p.set_defaults(func=_evaluate)


def _evaluate(args) -> int:
    result = call(api.evaluate, args, progress=lambda s: print(s, flush=True))
    print(f"wrote {result.out}/table1.md (and per_case.csv, table1.csv, statistics.csv, figure2.png, timing.csv)")
    return 0
