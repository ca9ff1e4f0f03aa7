"""Where the trainer folder for nnU-Net's ``nnUNet_extTrainer`` lives."""
from __future__ import annotations

import os
from pathlib import Path


def trainer_dir() -> str:
    """Absolute path of the installed ``nnunet_nerve.trainers`` folder (the repository's
    ``trainers/`` in an editable install). Importing it does not import the trainers."""
    import importlib.util

    spec = importlib.util.find_spec("nnunet_nerve.trainers")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nnunet_nerve.trainers is not installed; reinstall nnunet-nerve")
    return str(Path(list(spec.submodule_search_locations)[0]).resolve())


def ext_trainer_line() -> str:
    """The shell line that makes nnU-Net find FCDenseNetTrainer."""
    return f'export nnUNet_extTrainer="{trainer_dir()}"'


def ext_trainer_paths(environ=os.environ) -> list[str]:
    """The folders listed in nnUNet_extTrainer (os.pathsep-separated)."""
    value = environ.get("nnUNet_extTrainer", "")
    return [p for p in value.split(os.pathsep) if p.strip()]
