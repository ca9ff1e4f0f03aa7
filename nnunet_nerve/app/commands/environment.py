"""Verbs about the installation: `trainer-dir` and `doctor`."""
from __future__ import annotations

from nnunet_nerve import api


def add_parsers(sub) -> None:
    p = sub.add_parser("trainer-dir", help="print the folder to put in nnUNet_extTrainer",
                       description="Print the folder that nnU-Net's nnUNet_extTrainer must list so that "
                                   "nnUNetv2_train/-predict find FCDenseNetTrainer. Use: "
                                   'export nnUNet_extTrainer="$(nnunet-nerve trainer-dir)"')
    p.set_defaults(func=_trainer_dir)
    p = sub.add_parser("doctor", help="check that nnU-Net can train FCDenseNetTrainer here, and how to fix what cannot",
                       description="Checks nnU-Net's folder variables, nnUNet_extTrainer, nnU-Net's lookup of "
                                   "FCDenseNetTrainer, that torch and torchvision load together, and whether a GPU is "
                                   "usable. Exits 1 when training cannot work.")
    p.set_defaults(func=_doctor)


def _trainer_dir(args) -> int:
    print(api.trainer_dir())
    return 0


def _doctor(args) -> int:
    result = api.doctor()
    for c in result.checks:
        mark = {True: "ok  ", False: "FAIL", None: "info"}[c.ok]
        print(f"[{mark}] {c.name}: {c.detail}")
        if c.ok is False and c.fix:
            print(f"       fix: {c.fix}")
    if result.training_can_work:
        print("nnU-Net can train FCDenseNetTrainer here.")
        return 0
    print("nnU-Net cannot train FCDenseNetTrainer here until the FAIL lines are fixed.")
    return 1
