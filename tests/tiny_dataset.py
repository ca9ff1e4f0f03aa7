"""A tiny nnU-Net raw dataset for trainer tests: a bright tube in noise, on an oblique grid.

Written with SimpleITK so the real readers see real headers (non-identity direction,
odd origin, anisotropic spacing).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # 90 degrees in-plane rotation
SPACING = (0.52, 0.52, 4.0)
ORIGIN = (-83.2, 41.7, -12.5)


def tube_case(rng: np.random.Generator, shape=(6, 48, 56)) -> tuple[np.ndarray, np.ndarray]:
    """(image, label) in z, y, x: a disk of radius ~5 px drifting through the slices."""
    z, y, x = np.indices(shape)
    cy = shape[1] / 2 + rng.uniform(-6, 6) + 0.8 * z
    cx = shape[2] / 2 + rng.uniform(-6, 6)
    label = ((y - cy) ** 2 + (x - cx) ** 2 <= rng.uniform(4, 6) ** 2).astype(np.uint8)
    image = 100 + 20 * rng.standard_normal(shape) + 120 * label
    return image.astype(np.int16), label


def to_image(array: np.ndarray) -> sitk.Image:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(SPACING)
    img.SetOrigin(ORIGIN)
    img.SetDirection(DIRECTION)
    return img


def write_raw_dataset(raw: Path, dataset_id: int = 901, name: str = "Tiny", n_train: int = 4, n_test: int = 1,
                      seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = Path(raw) / f"Dataset{dataset_id:03d}_{name}"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_train):
        image, label = tube_case(rng)
        sitk.WriteImage(to_image(image), str(folder / "imagesTr" / f"sub-{i:03d}_0000.nii.gz"))
        sitk.WriteImage(to_image(label), str(folder / "labelsTr" / f"sub-{i:03d}.nii.gz"))
    for i in range(n_test):
        image, _ = tube_case(rng)
        sitk.WriteImage(to_image(image), str(folder / "imagesTs" / f"sub-t{i:02d}_0000.nii.gz"))
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T2"}, "labels": {"background": 0, "nerve": 1},
        "numTraining": n_train, "file_ending": ".nii.gz"}, indent=2))
    return folder
