"""Verbs about registries: `convert`, `check` and `phantom`."""
from __future__ import annotations

from pathlib import Path

from nnunet_nerve import api
from nnunet_nerve.app.commands import call, default


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "convert", help="convert a registry into an nnU-Net raw dataset with the fixed split",
        description="Validate REGISTRY (layout: docs/registry.md) and write $nnUNet_raw/Dataset<ID>_<NAME>/ "
                    "(imagesTr, labelsTr = the raters' consensus, raters/<R>/, participants.tsv, dataset.json) "
                    "and $nnUNet_preprocessed/Dataset<ID>_<NAME>/splits_final.json (folds stratified by cohort). "
                    "Nothing is written when the registry has problems; an existing dataset is replaced only "
                    "with --overwrite.")
    p.add_argument("registry", type=Path, help="the registry folder (holding participants.tsv)")
    p.add_argument("-d", "--dataset-id", type=int, required=True, help="nnU-Net dataset id (1-999)")
    p.add_argument("--name", default=default(api.convert, "name"),
                   help="dataset name after the id (default: %(default)s)")
    p.add_argument("--consensus", choices=("majority", "staple"), default=default(api.convert, "consensus"),
                   help="majority: nerve where more than half of the raters marked it (default); "
                        "staple: SimpleITK's STAPLE probability > 0.5")
    p.add_argument("--folds", type=int, default=default(api.convert, "folds"),
                   help="number of cross-validation folds (default: %(default)s; 0 writes no split, for a "
                        "dataset used only for evaluation or prediction)")
    p.add_argument("--seed", type=int, default=default(api.convert, "seed"),
                   help="seed of the split (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset and split")
    p.add_argument("--allow-uniform-masks", action="store_true",
                   help="accept rater masks that are empty or mark every voxel as nerve (refused by default)")
    p.set_defaults(func=_convert)

    p = sub.add_parser(
        "check", help="validate a registry without writing anything",
        description="Run every check of `convert` on REGISTRY and print each problem as one `error:` line "
                    "naming the subject and the file (exit 2), or a one-line summary (exit 0), the raters' "
                    "agreement, and a `warning:` line for each scan the biomarkers would refuse (slices not "
                    "axial) or whose header holds no geometry.")
    p.add_argument("registry", type=Path, help="the registry folder (holding participants.tsv)")
    p.add_argument("--allow-uniform-masks", action="store_true",
                   help="accept rater masks that are empty or mark every voxel as nerve (refused by default)")
    p.set_defaults(func=_check)

    p = sub.add_parser(
        "phantom", help="write a synthetic thigh MR-neurography registry",
        description="Write a synthetic registry (axial T2 TSE-like thigh stacks, sciatic nerve with fascicles "
                    "splitting into tibial and peroneal nerves distally, vessels as look-alikes, lesions in "
                    "patients, three raters) in the registry layout. It exercises the pipelines; it is no "
                    "evidence of accuracy on real scans.")
    p.add_argument("out", type=Path, help="the registry folder to create")
    p.add_argument("--volunteers", type=int, default=default(api.phantom, "volunteers"),
                   help="number of healthy volunteers (default: %(default)s)")
    p.add_argument("--patients", type=int, default=default(api.phantom, "patients"),
                   help="number of patients (default: %(default)s)")
    p.add_argument("--seed", type=int, default=default(api.phantom, "seed"), help="random seed (default: %(default)s)")
    p.add_argument("--size", choices=("small", "paper"), default=default(api.phantom, "size"),
                   help="small: 144x128 pixels of 1.25 mm, 20 slices of 4 mm (tests, the CPU demo); "
                        "paper: 738x635 pixels of 0.52 mm, 60 slices of 4 mm (384 x 330 mm FOV, int16)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT folder")
    p.set_defaults(func=_phantom)


def _convert(args) -> int:
    call(api.convert, args, progress=lambda message: print(message, flush=True))
    return 0


def _check(args) -> int:
    result = call(api.check, args)
    registry = result.registry
    cohorts = [p.cohort for p in registry.participants]
    order = "" if registry.rater_table is None else " (order of raters.tsv)"
    print(f"{registry.root}: ok, {len(cohorts)} subjects ({cohorts.count('volunteer')} volunteers, "
          f"{cohorts.count('patient')} patients), raters {', '.join(registry.raters)}{order}")
    for line in result.agreement_lines:
        print(line)
    for warning in result.warnings:
        print(f"warning: {warning}")
    return 0


def _phantom(args) -> int:
    call(api.phantom, args, progress=print)
    return 0
