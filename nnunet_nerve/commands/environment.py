"""Verbs about the installation: `trainer-dir` and `doctor`."""
from __future__ import annotations


def add_parsers(sub) -> None:
    p = sub.add_parser("trainer-dir", help="print the folder to put in nnUNet_extTrainer",
                       description="Print the folder that nnU-Net's nnUNet_extTrainer must list so that "
                                   "nnUNetv2_train/-predict find FCDenseNetTrainer. Use: "
                                   'export nnUNet_extTrainer="$(nnunet-nerve trainer-dir)"')
    p.set_defaults(func=_trainer_dir)


def _trainer_dir(args) -> int:
    from nnunet_nerve.trainer_dir import trainer_dir

    print(trainer_dir())
    return 0
