"""`segment`'s geometry path without the network: a known, asymmetric mask defined in patient space
is written on the grid our reader builds from a DICOM series, as segmentation.nii.gz and a DICOM
SEG; both are read back independently (pydicom, highdicom, the NIfTI header) and compared with
the mask at every pixel of every source instance, located from that instance's own header.

Series: the real sagittal knee series (../shared/data), and synthetic series written with real
DICOM tags: axial (files numbered against the slice order), oblique, a left-handed grid (slices
running against the DICOM normal) and negative direction cosines (shuffled instance numbers).
Every SEG passes dciodvfy without an error.
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from dicom_checks import dciodvfy_errors, nifti_values_at, pixel_points, seg_frames_by_source, source_geometry
from dicom_series_cases import SYNTHETIC, write_synthetic_series

#: Points within this distance (mm) of the region's boundary are not compared: slice positions
#: of real series jitter by about 2e-4 mm, which may move a voxel centre across the boundary.
BOUNDARY_MM = 0.01


class Region:
    """A known asymmetric region in patient space: a ball and a capsule placed off the centre of
    the series' field of view, sized by its smallest extent. ``distance`` is negative inside."""

    def __init__(self, sources: dict):
        corners = []
        for src in sources.values():
            pts = pixel_points(src)
            corners += [pts[0, 0], pts[0, -1], pts[-1, 0], pts[-1, -1]]
        corners = np.array(corners)
        lo, hi = corners.min(axis=0), corners.max(axis=0)
        centre = (lo + hi) / 2
        length = float(np.min(hi - lo)) if np.min(hi - lo) > 0 else float(np.max(hi - lo))
        self.ball = centre + np.array([0.21, -0.13, 0.17]) * length, 0.23 * length
        self.capsule = (centre + np.array([-0.3, 0.25, -0.2]) * length,
                        centre + np.array([0.05, 0.3, -0.1]) * length, 0.09 * length)

    def distance(self, points: np.ndarray) -> np.ndarray:
        ball = np.linalg.norm(points - self.ball[0], axis=-1) - self.ball[1]
        a, b, r = self.capsule
        t = np.clip(((points - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
        capsule = np.linalg.norm(points - (a + t[..., None] * (b - a)), axis=-1) - r
        return np.minimum(ball, capsule)


def grid_points(image: sitk.Image) -> np.ndarray:
    """Physical point of every voxel, array order (z, y, x, 3), from the image's header."""
    nx, ny, nz = image.GetSize()
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    ijk = np.stack([i, j, k], axis=-1) * np.array(image.GetSpacing())
    d = np.array(image.GetDirection()).reshape(3, 3)
    return np.array(image.GetOrigin()) + ijk @ d.T


def check_geometry(series_folder, out_folder):
    """Write the region's mask through `segment`'s geometry path and compare it with every source
    instance, pixel by pixel, in the SEG (pydicom and highdicom) and the NIfTI."""
    import highdicom as hd

    from nnunet_nerve.dicom.seg import Algorithm
    from nnunet_nerve.segmentation.segment import NIFTI_NAME, SEG_NAME, read_input, write_masks

    sources = source_geometry(series_folder)
    region = Region(sources)
    scan = read_input(series_folder)
    mask = region.distance(grid_points(scan.image)) < 0
    assert 0 < mask.sum() < mask.size
    out_folder.mkdir()
    write_masks(out_folder, scan, mask, Algorithm("FCDenseNetTrainer", "2d", (0, 1)))

    seg, frames = seg_frames_by_source(out_folder / SEG_NAME)
    nifti = sitk.ReadImage(str(out_folder / NIFTI_NAME))
    assert 1 < len(frames) < len(sources) or len(frames) == len(sources)
    assert set(frames) <= set(sources)
    compared = ignored = 0
    for uid, src in sources.items():
        points = pixel_points(src)
        distance = region.distance(points)
        inside, outside = distance < -BOUNDARY_MM, distance > BOUNDARY_MM
        ignored += int((~inside & ~outside).sum())
        frame = frames.get(uid, np.zeros((src["rows"], src["cols"]), dtype=np.uint8))
        assert frame.shape == (src["rows"], src["cols"])
        assert frame[inside].all(), f"{src['path'].name}: SEG frame misses {int((frame[inside] == 0).sum())} voxels"
        assert not frame[outside].any(), f"{src['path'].name}: SEG frame has {int(frame[outside].sum())} extra voxels"
        values = nifti_values_at(nifti, points)
        assert (values >= 0).all(), f"{src['path'].name}: pixels outside the NIfTI grid"
        assert (values[inside] == 1).all() and (values[outside] == 0).all(), src["path"].name
        # the image read from the series carries each instance's pixels at that instance's position
        assert np.array_equal(nifti_values_at(scan.image, points), src["pixels"].astype(int)), src["path"].name
        compared += int(inside.sum() + outside.sum())
    assert ignored < 0.01 * compared

    # each frame sits where its source instance is
    for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        position = np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        assert np.allclose(position, sources[uid]["ipp"], atol=1e-3)
    # references, frame of reference, patient and study, coding
    first = next(iter(sources.values()))
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert str(seg.FrameOfReferenceUID) == first["frame_of_reference"]
    assert str(seg.StudyInstanceUID) == first["study"]
    assert str(seg.get("PatientID", "")) == first["patient_id"]
    referenced = seg.ReferencedSeriesSequence
    assert len(referenced) == 1 and str(referenced[0].SeriesInstanceUID) == first["series"]
    assert {str(r.ReferencedSOPInstanceUID) for r in referenced[0].ReferencedInstanceSequence} == set(sources)
    segment = seg.SegmentSequence[0]
    assert (segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue,
            segment.SegmentedPropertyCategoryCodeSequence[0].CodingSchemeDesignator) == ("91723000", "SCT")
    assert (segment.SegmentedPropertyTypeCodeSequence[0].CodeValue,
            segment.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator) == ("84782009", "SCT")
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmSource == "nnunet-nerve" and "trainer=FCDenseNetTrainer" in algorithm.AlgorithmParameters

    # highdicom's own reader agrees, instance by instance
    loaded = hd.seg.segread(str(out_folder / SEG_NAME))
    uids = sorted(frames)
    by_source = loaded.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1])
    for k, uid in enumerate(uids):
        assert np.array_equal(by_source[k, ..., 0], frames[uid])

    errors = dciodvfy_errors(out_folder / SEG_NAME)
    assert not errors, "\n".join(errors)
    return scan


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_seg_and_nifti_land_on_the_source_slices(name, tmp_path):
    direction, order = SYNTHETIC[name]
    series = write_synthetic_series(tmp_path / "series", direction, order)
    scan = check_geometry(series, tmp_path / "out")
    # our reader orders slices along row x column whatever the grid the series was written from
    d = np.array(scan.image.GetDirection()).reshape(3, 3)
    assert np.allclose(d[:, 2], np.cross(d[:, 0], d[:, 1]), atol=1e-6)


def test_seg_and_nifti_land_on_the_real_sagittal_knee_series(shared_data, tmp_path):
    folder = shared_data / "knee-dess-dicom"
    scan = check_geometry(folder, tmp_path / "out")
    assert scan.image.GetSize() == (512, 512, 80)
    assert abs(np.array(scan.image.GetDirection()).reshape(3, 3)[0, 2]) > 0.99  # sagittal: slices along x


def test_synthetic_series_are_valid_mr_images(tmp_path):
    direction, order = SYNTHETIC["oblique"]
    series = write_synthetic_series(tmp_path / "series", direction, order, shape=(2, 8, 9))
    for path in sorted(series.iterdir()):
        errors = dciodvfy_errors(path)
        assert not errors, f"{path.name}:\n" + "\n".join(errors)
