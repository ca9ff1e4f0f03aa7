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


def test_piece_axes_are_those_of_an_ellipse_and_a_nerve_cut_lengthwise_is_recognised():
    """``io.masks.piece_axes_mm``: an axis-aligned ellipse of semi-axes 10 and 4 mm on a 0.5 mm grid
    has full axes 20 and 8 mm (within one pixel: the pixel centres' range plus one pixel). ``lengthwise_nerve_problem``: a tube along z
    (r 3 mm, 40 slices of 4 mm) is compact on every slice; the same voxels with the grid's axes
    permuted (slices along the tube, the header still calling them axial) are streaks 160 mm long
    on the 13 slices of 0.5 mm it covers; an empty mask gives None."""
    from nerve_tubes import SPACING, tube
    from nnunet_nerve.io.masks import lengthwise_nerve_problem, piece_axes_mm

    y, x = np.mgrid[0:80, 0:80] * 0.5
    major, minor = piece_axes_mm(((x - 20) / 10) ** 2 + ((y - 20) / 4) ** 2 <= 1, (0.5, 0.5))
    assert major == pytest.approx(20, abs=0.5) and minor == pytest.approx(8, abs=0.5)
    nerve = tube((24, 24), 3.0)
    assert lengthwise_nerve_problem(nerve, SPACING) is None
    lengthwise = lengthwise_nerve_problem(np.transpose(nerve, (1, 0, 2)), (SPACING[1], SPACING[0], SPACING[2]))
    assert lengthwise.startswith("the nerve looks cut lengthwise: its pieces are ")
    assert "29 times longer than wide and 160 mm long (medians over its 13 slices), longer than the 6.5 mm of stack " \
           "it covers" in lengthwise
    assert lengthwise_nerve_problem(np.zeros((3, 8, 8), bool), SPACING) is None
