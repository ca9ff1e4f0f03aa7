"""The paper's training augmentation as a batchgeneratorsv2 pipeline.

Balsiger et al. (2018) used random flips, random translation and random elastic
deformation, nothing else: no rotation, no scaling, no intensity augmentation. The
pipeline built here is pickled into nnU-Net's data-augmentation worker processes, which is
why it lives in ``nnunet_nerve`` and not in a trainer module (nnU-Net drops trainer
modules from ``sys.modules`` after the trainer lookup).

- Translation: nnU-Net's data loader cuts a patch of ``patch + 2 * max_shift`` pixels per
  axis; ``SpatialTransform`` then crops the final patch with its centre drawn uniformly,
  i.e. a uniform random shift of at most ``max_shift`` pixels per axis.
- Elastic deformation: with probability ``p_elastic``, a smooth random displacement field
  (Gaussian-smoothed noise, sigma ``elastic_scale`` x patch size, maximum displacement
  ``elastic_magnitude`` pixels).
- Flips: each allowed axis mirrored with probability 0.5.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

#: Uniform translation range in pixels per axis (about 10 mm at 0.52 mm pixels).
MAX_SHIFT_FRACTION = 1 / 16
P_ELASTIC = 0.3
ELASTIC_SCALE = (0.05, 0.15)
ELASTIC_MAGNITUDE = (2.0, 8.0)


def max_shift(patch_size: Sequence[int]) -> tuple[int, ...]:
    """The largest random translation, in pixels, per axis: 1/16 of the patch side."""
    return tuple(int(round(p * MAX_SHIFT_FRACTION)) for p in patch_size)


def initial_patch_size(patch_size: Sequence[int]) -> np.ndarray:
    """The patch the data loader must cut so that a shift of ``max_shift`` stays inside it."""
    return np.array([p + 2 * s for p, s in zip(patch_size, max_shift(patch_size))])


def paper_training_transforms(patch_size: Sequence[int], mirror_axes: Sequence[int] | None):
    """Flips, translation and elastic deformation; segmentation padding (-1) is reset to 0."""
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
    from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform

    transforms = [
        SpatialTransform(
            tuple(int(p) for p in patch_size),
            patch_center_dist_from_border=[int(p) // 2 for p in patch_size],
            random_crop=True,
            p_elastic_deform=P_ELASTIC,
            elastic_deform_scale=ELASTIC_SCALE,
            elastic_deform_magnitude=ELASTIC_MAGNITUDE,
            p_rotation=0,
            p_scaling=0,
            border_mode_seg="constant",
            padding_value_seg=-1,
        ),
    ]
    if mirror_axes:
        transforms.append(MirrorTransform(allowed_axes=tuple(mirror_axes)))
    transforms.append(RemoveLabelTansform(-1, 0))
    return ComposeTransforms(transforms)
