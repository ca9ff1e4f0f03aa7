"""Predicting one image with a trained nnU-Net model folder, through nnU-Net's own ``nnUNetPredictor``,
so that the result is the one ``nnUNetv2_predict`` writes for the same image and folds.

A model folder is what ``nnUNetv2_predict_from_modelfolder -m`` takes:
``.../Dataset<ID>_<NAME>/<trainer>__<plans>__<configuration>`` with ``plans.json``,
``dataset.json`` and ``fold_<k>/checkpoint_final.pth`` per trained fold (any trainer,
FCDenseNetTrainer or nnU-Net's). Folds default to every ``fold_<k>`` holding the checkpoint
(``fold_all`` when it is the only one), as ``nnUNetPredictor.auto_detect_available_folds``.

Same as ``nnUNetv2_predict`` (its defaults): tile step 0.5, Gaussian tile weighting, test-time
mirroring over the axes the checkpoint allows (FCDenseNetTrainer allows none) unless
``mirroring=False`` (``--disable_tta``), the tile (patch) size of the model folder's
plans.json, torch threads = the CPU count on ``cpu``. The image goes in as nnU-Net's
``SimpleITKIO`` reads a file: ``GetArrayFromImage`` as float32 with a leading channel axis,
the spacing reversed to (z, y, x); the segmentation comes back on the image's grid. Models
whose plans read images with another reader are refused (their axis order differs).
"""
from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnunet_nerve.registry.dataset_info import read_json
from nnunet_nerve.errors import NerveError

CHECKPOINT = "checkpoint_final.pth"
SUPPORTED_READERS = ("SimpleITKIO",)
DEVICES = ("cpu", "cuda", "mps")


@dataclass
class ModelFolder:
    """A checked model folder: the folds to use and what its plans and dataset.json say."""

    folder: Path
    folds: tuple
    plans: dict = field(repr=False)
    dataset_json: dict = field(repr=False)

    @property
    def checkpoints(self) -> list:
        return [self.folder / f"fold_{f}" / CHECKPOINT for f in self.folds]

    @property
    def name_parts(self) -> tuple:
        """(trainer, plans, configuration) from the folder name ``<trainer>__<plans>__<configuration>``."""
        parts = self.folder.name.split("__")
        return tuple(parts) if len(parts) == 3 else (self.folder.name, "?", "?")


def _fold_key(name: str):
    suffix = name[len("fold_"):]
    return (0, int(suffix)) if suffix.isdigit() else (1, suffix)


def available_folds(folder: Path) -> list:
    """Folds with a ``checkpoint_final.pth`` (ints; "all" only when no numbered fold has one)."""
    found = sorted((p.name for p in folder.glob("fold_*") if (p / CHECKPOINT).is_file()), key=_fold_key)
    numbered = [int(n[len("fold_"):]) for n in found if n[len("fold_"):].isdigit()]
    if numbered:
        return numbered
    return ["all"] if "fold_all" in found else []


def _parse_fold(value) -> "int | str":
    text = str(value).strip()
    if text == "all":
        return "all"
    if text.isdigit():
        return int(text)
    raise NerveError(f"fold {value!r}: expected a fold number or 'all'")


def check_model_folder(folder: "str | os.PathLike", folds=None) -> ModelFolder:
    """Check a model folder before any work: plans.json, dataset.json (one input channel, one
    foreground label), a supported image reader, and a checkpoint for each fold."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise NerveError(f"{folder}: no such model folder (give a trained results folder, e.g. "
                         f".../Dataset042_Thigh/FCDenseNetTrainer__nnUNetPlans__2d)")
    hint = "; a trained model folder holds plans.json, dataset.json and fold_<k>/ (written by nnUNetv2_train)"
    plans = read_json(folder / "plans.json", hint)
    dataset_json = read_json(folder / "dataset.json", hint)
    if not isinstance(plans, dict) or not isinstance(dataset_json, dict):
        raise NerveError(f"{folder}: plans.json or dataset.json is not a JSON object")
    channels = dataset_json.get("channel_names") or dataset_json.get("modality") or {}
    if len(channels) != 1:
        raise NerveError(f"{folder / 'dataset.json'}: the model takes {len(channels)} input channel(s); "
                         f"segment gives it one image")
    labels = dataset_json.get("labels") or {}
    foreground = [k for k, v in labels.items() if v not in (0, "0") and k != "ignore"]
    if len(foreground) != 1 or any(isinstance(v, (list, tuple)) for v in labels.values()):
        raise NerveError(f"{folder / 'dataset.json'}: the model predicts labels {labels}; segment expects "
                         f"background 0 and one nerve label 1")
    reader = plans.get("image_reader_writer", "SimpleITKIO")
    if reader not in SUPPORTED_READERS:
        raise NerveError(f"{folder / 'plans.json'}: the model reads images with {reader}; segment supports "
                         f"models trained with {', '.join(SUPPORTED_READERS)} (nnU-Net's reader for .nii.gz)")
    if folds is None or len(folds) == 0:
        folds = available_folds(folder)
        if not folds:
            present = sorted(p.name for p in folder.glob("fold_*"))
            raise NerveError(f"{folder}: no fold_<k>/{CHECKPOINT} (folds present: "
                             f"{', '.join(present) if present else 'none'}); train the model first")
    else:
        folds = [_parse_fold(f) for f in folds]
        missing = [f"fold_{f}/{CHECKPOINT}" for f in folds if not (folder / f"fold_{f}" / CHECKPOINT).is_file()]
        if missing:
            present = available_folds(folder)
            raise NerveError(f"{folder}: missing {', '.join(missing)} (folds with a checkpoint: "
                             f"{', '.join(map(str, present)) if present else 'none'})")
    return ModelFolder(folder, tuple(folds), plans, dataset_json)


def torch_device(device: str):
    import torch

    if device not in DEVICES:
        raise NerveError(f"--device {device}: expected one of {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise NerveError("--device cuda: no CUDA GPU is available to torch here; use --device cpu")
    if device == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise NerveError("--device mps: Apple's MPS is not available here; use --device cpu")
    return torch.device(device)


@contextlib.contextmanager
def _our_trainers_findable():
    """nnUNet_extTrainer extended with this package's trainer folder while inside (restored after),
    so that a model of FCDenseNetTrainer loads without the user's export line."""
    from nnunet_nerve.training.trainer_dir import ext_trainer_paths, trainer_dir

    before = os.environ.get("nnUNet_extTrainer")
    ours = trainer_dir()
    if ours not in ext_trainer_paths():
        os.environ["nnUNet_extTrainer"] = os.pathsep.join([*ext_trainer_paths(), ours])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("nnUNet_extTrainer", None)
        else:
            os.environ["nnUNet_extTrainer"] = before


def _damaged_checkpoint(model: ModelFolder) -> "str | None":
    import torch

    for path in model.checkpoints:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
            if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
                return f"{path}: not an nnU-Net checkpoint (no network_weights)"
        except Exception as e:  # noqa: BLE001 - any failure to unpickle means a damaged file
            return f"{path}: cannot read the checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    return None


def load_predictor(model: ModelFolder, device: str = "cpu", mirroring: bool = True, progress_bar: bool = False):
    """nnU-Net's ``nnUNetPredictor`` initialised from the model folder, as ``nnUNetv2_predict`` makes it."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    torch_dev = torch_device(device)
    # nnUNetv2_predict passes True; nnUNetPredictor turns it off itself (with a print) on other devices
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=torch_dev.type == "cuda", device=torch_dev,
                                verbose=False, verbose_preprocessing=False, allow_tqdm=progress_bar)
    try:
        # nnU-Net prints its trainer search; keep the progress output to our stage lines
        with _our_trainers_findable(), contextlib.redirect_stdout(io.StringIO()):
            predictor.initialize_from_trained_model_folder(str(model.folder), list(model.folds), CHECKPOINT)
    except Exception as e:  # noqa: BLE001 - turned into one line naming the file
        damaged = _damaged_checkpoint(model)
        if damaged:
            raise NerveError(damaged) from None
        if "Could not find requested nnunet trainer" in str(e):
            raise NerveError(f"{model.folder}: nnU-Net cannot find the model's trainer class "
                             f"({str(e).split('trainer ')[1].split(' ')[0]}); add its folder to nnUNet_extTrainer") from None
        raise NerveError(f"{model.folder}: cannot load the model ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return predictor


def model_description(model: ModelFolder, predictor) -> dict:
    """What the prediction used: folder, trainer, plans, configuration, folds, tile (patch) size,
    tile step, mirroring axes (None when off), network class and parameter count."""
    _, plans_name, configuration = model.name_parts
    axes = predictor.allowed_mirroring_axes if predictor.use_mirroring else None
    return {"folder": str(model.folder.resolve()), "trainer": predictor.trainer_name,
            "plans": model.plans.get("plans_name", plans_name), "configuration": configuration,
            "folds": list(model.folds),
            "patch_size": [int(p) for p in predictor.configuration_manager.patch_size],
            "tile_step_size": predictor.tile_step_size,
            "mirroring_axes": list(axes) if axes is not None else None,
            "network": type(predictor.network).__name__,
            "parameters": int(sum(p.numel() for p in predictor.network.parameters()))}


def simpleitk_io_input(image) -> tuple:
    """(array, properties) exactly as nnU-Net's ``SimpleITKIO.read_images`` returns them for a
    file holding ``image``: float32 (1, z, y, x) and {'sitk_stuff': ..., 'spacing': (z, y, x)}."""
    import SimpleITK as sitk

    from nnunet_nerve.io.images import volume_problem

    problem = volume_problem(image)
    if problem:
        raise NerveError(problem)
    array = sitk.GetArrayFromImage(image)[None].astype(np.float32, casting="unsafe")
    props = {"sitk_stuff": {"spacing": image.GetSpacing(), "origin": image.GetOrigin(),
                            "direction": image.GetDirection()},
             "spacing": [abs(float(s)) for s in image.GetSpacing()[::-1]]}
    return array, props


@contextlib.contextmanager
def _threads_as_nnunet_predict(device: str):
    """``nnUNetv2_predict -device cpu`` sets torch to the machine's CPU count; restored after."""
    import multiprocessing

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(multiprocessing.cpu_count() if device == "cpu" else 1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def predict_image(predictor, image, device: str = "cpu") -> np.ndarray:
    """The predicted label map (uint8, z, y, x) on ``image``'s grid."""
    array, props = simpleitk_io_input(image)
    with _threads_as_nnunet_predict(device):
        segmentation = predictor.predict_single_npy_array(array, props, None, None, False)
    segmentation = np.asarray(segmentation)
    if segmentation.shape != array.shape[1:]:
        raise NerveError(f"prediction has shape {segmentation.shape}, the image {array.shape[1:]}")
    return segmentation.astype(np.uint8)
