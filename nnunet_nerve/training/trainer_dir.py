"""Where the trainer folder for nnU-Net's ``nnUNet_extTrainer`` lives.

Installed, it is the package's ``nnunet_nerve/trainers`` folder (the repository's top-level
``trainers/``, installed inside the package). A Python started in a clone's root imports the
source tree instead, which has no ``nnunet_nerve/trainers``; there the clone's own
``trainers/`` folder is the answer. Both hold thin modules that re-export the classes of
``nnunet_nerve.training``, so either works with the code that is imported.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

#: a module that every trainer folder of this package holds
MARKER_MODULE = "fcdensenet_trainer.py"


def trainer_dir() -> str:
    """Absolute path of the trainer folder that matches the imported ``nnunet_nerve``.

    Importing it does not import the trainers."""
    spec = importlib.util.find_spec("nnunet_nerve.trainers")
    if spec is not None and spec.submodule_search_locations:
        return str(Path(list(spec.submodule_search_locations)[0]).resolve())
    import nnunet_nerve

    source_tree = Path(nnunet_nerve.__file__).resolve().parent.parent / "trainers"
    if (source_tree / MARKER_MODULE).is_file():
        return str(source_tree)
    raise RuntimeError(f"no trainer folder: neither nnunet_nerve.trainers is installed nor is there a "
                       f"{source_tree} beside the imported package ({Path(nnunet_nerve.__file__).parent}); "
                       f"reinstall nnunet-nerve (pip install nnunet-nerve, or pip install . in a clone)")


def ext_trainer_line() -> str:
    """The shell line that makes nnU-Net find FCDenseNetTrainer."""
    return f'export nnUNet_extTrainer="{trainer_dir()}"'


def ext_trainer_paths(environ=os.environ) -> list[str]:
    """The folders listed in nnUNet_extTrainer (os.pathsep-separated)."""
    value = environ.get("nnUNet_extTrainer", "")
    return [p for p in value.split(os.pathsep) if p.strip()]
