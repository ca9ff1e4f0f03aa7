"""Grid comparison (``io.images.grid_mismatch``) and the 3-D, one-value-per-voxel check, on
SimpleITK images; messages hold plain numbers and name the reference grid."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_nerve.errors import NerveError
from nnunet_nerve.io.images import grid_mismatch, read_volume, volume_problem


def _grid(spacing=(0.52, 0.52, 4.0), origin=(-10.0, -12.0, 30.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
          size=(12, 10, 3)) -> sitk.Image:
    image = sitk.Image(size, sitk.sitkUInt8)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def test_last_digit_differences_agree_and_each_real_difference_is_named():
    ref = _grid()
    assert grid_mismatch(ref, _grid(spacing=(0.52 * (1 + 1e-6), 0.52, 4.0), origin=(-10.0 + 1e-5, -12.0, 30.0))) is None
    assert grid_mismatch(ref, _grid(size=(12, 10, 4))) == "size (12, 10, 4) differs from the image's (12, 10, 3)"
    assert grid_mismatch(ref, _grid(spacing=(0.6, 0.52, 4.0))) == \
        "spacing (0.6, 0.52, 4) differs from the image's (0.52, 0.52, 4)"
    assert grid_mismatch(ref, _grid(origin=(-10.0, -12.0, 30.5)), "its label's") == \
        "origin (-10, -12, 30.5) differs from its label's (-10, -12, 30)"
    flipped = grid_mismatch(ref, _grid(direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1)))
    assert flipped.startswith("direction cosines (-1, 0, 0, 0, 1, 0, 0, 0, 1) differ from the image's "
                              "(1, 0, 0, 0, 1, 0, 0, 0, 1)") and "resample the mask onto the image" in flipped
    assert "np.float64" not in flipped


def test_volume_problem_and_read_volume(tmp_path):
    assert volume_problem(_grid()) is None
    assert volume_problem(sitk.Image((4, 4, 4, 2), sitk.sitkUInt8)) == "image is 4D, expected a 3D image"
    assert volume_problem(sitk.Image((4, 4), sitk.sitkUInt8), "mask of rater OS") == \
        "mask of rater OS is 2D, expected a 3D image"
    vector = sitk.GetImageFromArray(np.zeros((3, 4, 5, 2), np.float32), isVector=True)
    assert volume_problem(vector, "mask") == "mask has 2 values per voxel (a 4D or vector image), expected one"
    path = tmp_path / "vector.nii.gz"
    sitk.WriteImage(vector, str(path))
    with pytest.raises(NerveError, match=f"^{path}: image has 2 values per voxel"):
        read_volume(path)
