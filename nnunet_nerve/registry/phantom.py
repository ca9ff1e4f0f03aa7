"""A synthetic thigh MR-neurography registry (``nnunet-nerve phantom``): the project's embedded data.

Each subject is an axial stack that looks like a T2-weighted TSE without fat suppression
(Balsiger et al. 2018): bright subcutaneous and intermuscular fat, darker muscles
separated by fat septa, the femur with a dark cortex and bright fatty marrow; the sciatic
nerve in a posterior fat pad, with a fascicular texture, running through the stack and
splitting into the tibial and common peroneal nerves in distal stacks; the
femoral/popliteal artery (flow void) and vein (bright, round, homogeneous) and a small
perforating vein beside the nerve as look-alikes; the great saphenous vein in the
subcutaneous fat. Patients carry a focal or an extended lesion (a thicker, hyperintense
nerve); participants.tsv records its kind (``lesion``) and its true extent in slices of the
stack (``lesion_first_slice``, ``lesion_last_slice``: full width at half maximum, ``n/a``
without a lesion). Every image has a smooth coil bias field and Rician noise; some patients have
motion ghosting along the phase-encoding (anterior-posterior) direction.

Three raters (``OS``, ``BW``, ``AB``) outline the true nerve with their own bias and a
boundary jitter of about a pixel, and some miss the small peroneal branch on some slices,
so that inter-rater Dice is about 0.8-0.9 and the majority vote is close to the truth.
raters.tsv lists them in that order (``experience_rank`` 1 = most experienced), the order in
which the paper reports its raters (OS, BW, LG).

Everything is deterministic for (seed, subject index) and vectorised per slice. The
phantom exercises the pipelines; it is no evidence of accuracy on real scans. The subjects'
drawn parameters and anatomy are in ``phantom_anatomy``; this module renders and writes them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from nnunet_nerve import __version__
from nnunet_nerve.io.atomic import atomic_directory
from nnunet_nerve.registry.phantom_anatomy import (RATERS, MUSCLE_SEEDS, SIZES, PhantomSize, Subject, lesion_columns,
                                                    nerve_components, phantom_subjects, thigh_taper)
from nnunet_nerve.registry.dataset_info import PARTICIPANTS_FILE, RATERS_FILE, Participant, write_participants
from nnunet_nerve.registry.reader import RaterRow, image_path, mask_path, write_rater_table


# Relative T2 TSE intensities (subcutaneous fat = 1).
FAT, MUSCLE, SKIN, FASCIA, CORTEX, MARROW = 1.0, 0.32, 0.55, 0.22, 0.05, 0.88
FASCICLE, INTERFASCICULAR = 0.40, 0.72
ARTERY, DEEP_VEIN, PERFORATOR, SAPHENOUS = 0.07, 0.80, 0.62, 0.22


def ellipse_distance(x: np.ndarray, y: np.ndarray, a: float, b: float) -> np.ndarray:
    """Approximate signed distance (mm, negative inside) to an axis-aligned ellipse at the origin:
    (F - 1) / |grad F| with F = (x/a)^2 + (y/b)^2, exact on the boundary to first order."""
    f = (x / a) ** 2 + (y / b) ** 2
    grad = 2 * np.sqrt((x / a ** 2) ** 2 + (y / b ** 2) ** 2)
    return np.where(grad > 1e-9, (f - 1) / np.maximum(grad, 1e-9), -min(a, b))


def coverage(distance: np.ndarray, pixel: float) -> np.ndarray:
    """Partial-volume fraction of a pixel given the signed distance of its centre: a 1-pixel ramp."""
    return np.clip(0.5 - distance / pixel, 0.0, 1.0)


def _paint(image: np.ndarray, weight: np.ndarray, value) -> None:
    image *= 1 - weight
    image += weight * value


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def render_slice(s: Subject, k: int, size: PhantomSize, X: np.ndarray, Y: np.ndarray) -> tuple:
    """One axial slice: (relative intensity image, true nerve mask, rater masks [n_raters, ny, nx]).

    Only the thigh's bounding box (plus a margin) is computed; the rest is air (0)."""
    z = s.z_start + k * size.spacing_xyz[2]
    a = s.thigh_a * size.anatomy_scale * thigh_taper(z) * 1.05 + 3 * max(size.spacing_xyz[:2])
    b = s.thigh_b * size.anatomy_scale * thigh_taper(z) * 1.05 + 3 * max(size.spacing_xyz[:2])
    cols = np.nonzero(np.abs(X[0] - s.center[0]) <= a)[0]
    rows = np.nonzero(np.abs(Y[:, 0] - s.center[1]) <= b)[0]
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    image = np.zeros(X.shape, np.float32)
    truth = np.zeros(X.shape, bool)
    raters = np.zeros((len(RATERS),) + X.shape, bool)
    image[box], truth[box], raters[(slice(None),) + box] = _render_thigh(s, k, size, X[box], Y[box])
    return image, truth, raters


def _render_thigh(s: Subject, k: int, size: PhantomSize, X: np.ndarray, Y: np.ndarray) -> tuple:
    """Slice ``k`` on the grid ``X``, ``Y`` (mm): (image, truth, raters) as ``render_slice``,
    painted from the outside in (each tissue over the ones before)."""
    sx, sy, sz = size.spacing_xyz
    pixel = min(sx, sy)
    scale = size.anatomy_scale
    z = s.z_start + k * sz
    a, b = s.thigh_a * scale * thigh_taper(z), s.thigh_b * scale * thigh_taper(z)
    x, y = X - s.center[0], Y - s.center[1]
    image = np.zeros(X.shape, np.float32)
    _paint_compartments(image, s, z, x, y, a, b, scale, pixel)
    fx, fy = _paint_femur(image, z, x, y, a, b, scale, pixel)
    # Great saphenous vein in the medial subcutaneous fat.
    _paint(image, coverage(np.hypot(x - 0.93 * a + s.fat * scale * 0.5, y - 0.15 * b) - 2.2 * scale, pixel), SAPHENOUS)
    comps = nerve_components(s, z, scale, size.nerve_scale)
    _paint_nerve_surroundings(image, s, z, X, Y, comps, (fx, fy), a, b, scale, pixel)
    truth, raters = _paint_nerve(image, s, k, z, X, Y, comps, pixel)
    return image, truth, raters


def _paint_compartments(image, s: Subject, z: float, x, y, a: float, b: float, scale: float, pixel: float) -> None:
    """Skin, subcutaneous fat, fascia and the muscles with their fat septa (``x``, ``y``: mm
    from the thigh's centre; ``a``, ``b``: the thigh's semi-axes at this height)."""
    # Thigh: skin, subcutaneous fat, fascia, muscle compartment.
    wobble = 1 + 0.025 * np.cos(3 * np.arctan2(y, x) + 0.01 * z)
    d_skin = ellipse_distance(x, y, a, b) * wobble
    _paint(image, coverage(d_skin, pixel), SKIN)
    _paint(image, coverage(d_skin + 1.5, pixel), FAT)
    fa, fb = a - s.fat * scale, b - s.fat * scale * 0.9
    d_fascia = ellipse_distance(x, y, fa, fb)
    _paint(image, coverage(d_fascia, pixel), FASCIA)
    # Muscles: a Voronoi partition of the fascia ellipse; septa of fat where two muscles meet.
    u, v = x / fa, y / fb
    # Curved septa: warp the partition with a smooth displacement that drifts along the stack.
    u, v = (u + 0.07 * np.sin(3.1 * v + 0.013 * z + s.warp_phase),
            v + 0.07 * np.sin(2.7 * u - 0.011 * z + 2 * s.warp_phase))
    seeds = MUSCLE_SEEDS + s.seed_jitter + 0.04 * np.sin(z / 60.0 + np.arange(len(MUSCLE_SEEDS)))[:, None]
    dist = np.hypot(u[None] - seeds[:, 0, None, None], v[None] - seeds[:, 1, None, None])
    nearest = np.argmin(dist, axis=0)
    d1, d2 = np.partition(dist, 1, axis=0)[:2]
    muscle = MUSCLE * s.muscle_gain.astype(np.float32)[nearest]
    septum = coverage((d2 - d1) * 0.5 * (fa + fb) / 2 - 0.9, pixel)
    inner = coverage(d_fascia + 1.2, pixel)
    _paint(image, inner, muscle * (1 - septum) + FAT * septum)


def _paint_femur(image, z: float, x, y, a: float, b: float, scale: float, pixel: float) -> tuple:
    """The femur; returns its centre (mm from the thigh's centre)."""
    # Dark cortex, bright marrow; wider towards the knee.
    fx, fy = -0.06 * a, -0.12 * b
    r_bone = (12.5 + 9 * np.exp(-(z - 20) / 45)) * scale
    cortex = (4.0 - 2.2 * np.exp(-(z - 20) / 45)) * scale
    d_bone = np.hypot(x - fx, y - fy) - r_bone
    _paint(image, coverage(d_bone, pixel), CORTEX)
    _paint(image, coverage(d_bone + cortex, pixel), MARROW)
    return fx, fy


def _paint_nerve_surroundings(image, s: Subject, z: float, X, Y, comps: list, femur: tuple, a: float, b: float,
                              scale: float, pixel: float) -> None:
    """The nerve's fat pad and the vessels beside it (``comps``: ``nerve_components``)."""
    fx, fy = femur
    ncx = np.mean([c[0] for c in comps])
    ncy = np.mean([c[1] for c in comps])
    pad = np.minimum.reduce([ellipse_distance(X - c[0], Y - c[1], c[2] + 5.0 * scale, c[3] + 4.0 * scale)
                           for c in comps])
    pad = np.minimum(pad, ellipse_distance(X - ncx, Y - ncy + 6 * scale, 16 * scale, 11 * scale))
    _paint(image, coverage(pad, pixel), FAT)
    # Femoral vessels (anteromedial, by the femur) become the popliteal vessels (anterior to the nerve)
    # below the adductor hiatus (~12 cm above the knee).
    w = float(_smoothstep((z - 80) / 80))
    vx = w * (s.center[0] + fx + 0.42 * a) + (1 - w) * (ncx + 4 * scale)
    vy = w * (s.center[1] + fy + 0.05 * b) + (1 - w) * (ncy - 13 * scale)
    _paint(image, coverage(np.hypot(X - vx, Y - vy) - 4.2 * scale, pixel), DEEP_VEIN)
    _paint(image, coverage(np.hypot(X - vx - 8 * scale, Y - vy + 1 * scale) - 3.0 * scale, pixel), ARTERY)
    if s.has_perforator:
        px = ncx + 10 * scale * np.cos(0.01 * z + 1.0)
        py = ncy - 7 * scale
        _paint(image, coverage(np.hypot(X - px, Y - py) - 2.4 * scale, pixel), PERFORATOR)


def _paint_nerve(image, s: Subject, k: int, z: float, X, Y, comps: list, pixel: float) -> tuple:
    """The nerve's fascicles into ``image``; returns (true nerve mask, rater masks)."""
    # Nerve fascicles: bright interfascicular fat around intermediate fascicles; lesions brighten them.
    truth = np.zeros(X.shape, bool)
    raters = np.zeros((len(RATERS),) + X.shape, bool)
    twist = 0.004 * z
    rot = np.array([[np.cos(twist), -np.sin(twist)], [np.sin(twist), np.cos(twist)]])
    fasc = s.fascicles @ rot.T
    below_split = z < s.z_split - 6.0
    for cx, cy, ra, rb, swell, is_peroneal in comps:
        d = ellipse_distance(X - cx, Y - cy, ra, rb)
        near = d < 2 * pixel
        cov = coverage(d[near], pixel)
        nu, nv = (X[near] - cx) / ra, (Y[near] - cy) / rb
        texture = np.exp(-((nu[:, None] - fasc[:, 0]) ** 2 + (nv[:, None] - fasc[:, 1]) ** 2) / (2 * 0.13 ** 2)).max(1)
        hyper = swell - 1.0
        fascicle = FASCICLE + 0.65 * hyper
        between = INTERFASCICULAR + 0.2 * hyper
        value = between + (fascicle - between) * texture
        region = image[near]
        _paint(region, cov, value)
        image[near] = region
        truth |= d < 0
        angle = np.arctan2(Y[near] - cy, X[near] - cx)
        for r in range(len(RATERS)):
            if is_peroneal and below_split and s.rater_misses_branch[r] and (k * 7 + r * 3) % 10 < 3:
                continue  # this rater missed the small branch on this slice
            phase = s.rater_phase[r, k]
            jitter = sum(0.45 * pixel / (h + 1) ** 0.5 * np.cos((h + 1) * angle + phase[h]) for h in range(4))
            raters[r][near] |= d[near] + (s.rater_bias[r] * pixel) + jitter < 0
    return truth, raters


def bias_field(s: Subject, X: np.ndarray, Y: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative receive-coil field (about 0.7-1.3): coils around the thigh."""
    field = np.full(X.shape, 0.55, np.float32)
    reach = 0.9 * s.thigh_a * scale
    for angle in rng.uniform(0, 2 * np.pi, 4):
        cx = s.center[0] + 1.1 * s.thigh_a * scale * np.cos(angle)
        cy = s.center[1] + 1.1 * s.thigh_b * scale * np.sin(angle)
        field += rng.uniform(0.25, 0.45) * np.exp(-((X - cx) ** 2 + (Y - cy) ** 2) / (2 * reach ** 2))
    return field / field[np.hypot(X - s.center[0], Y - s.center[1]) < s.thigh_b * scale].mean()


def motion_ghosting(volume: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Periodic motion (breathing, pulsation) during a sequential acquisition of the phase-encoding
    lines (along y, axis 1): line n sees the object displaced by d(n) = strength * sin(2 pi n / T + p0)
    pixels and a phase error of 0.3 * strength * sin(...) rad, with a period T of 5-12 lines. In
    k-space that multiplies line ky by exp(-i (2 pi ky d(n) + phase(n))); in the image it adds
    attenuated copies of the thigh shifted by multiples of ny/T pixels along y (ghosts)."""
    ny = volume.shape[1]
    ky = np.fft.fftfreq(ny)                              # cycles per pixel, FFT order
    line = np.round(ky * ny).astype(int) + ny // 2       # acquisition index of each k-space line
    wave = np.sin(2 * np.pi * line / rng.uniform(5, 12) + rng.uniform(0, 2 * np.pi))
    phase = np.exp(-1j * (2 * np.pi * ky * strength * wave + 0.3 * strength * wave))
    return np.fft.ifft(np.fft.fft(volume, axis=1) * phase[None, :, None].astype(np.complex64), axis=1)


def render_subject(s: Subject, size: PhantomSize, seed: int, index: int) -> tuple:
    """(int16 image [z, y, x], rater masks {rater: uint8 [z, y, x]}, true mask uint8) for one subject."""
    nx, ny, nz = size.shape_xyz
    sx, sy, _ = size.spacing_xyz
    X, Y = np.meshgrid(((np.arange(nx) - (nx - 1) / 2) * sx).astype(np.float32),
                       ((np.arange(ny) - (ny - 1) / 2) * sy).astype(np.float32))
    volume = np.zeros((nz, ny, nx), np.float32)
    truth = np.zeros((nz, ny, nx), bool)
    raters = np.zeros((len(RATERS), nz, ny, nx), bool)
    for k in range(nz):
        volume[k], truth[k], raters[:, k] = render_slice(s, k, size, X, Y)
    rng = np.random.default_rng([seed, index, 1])
    field = bias_field(s, X, Y, size.anatomy_scale, rng)
    slope = 1 + 0.1 * (np.arange(nz) - nz / 2) / nz
    signal = volume * field[None] * slope[:, None, None]
    complex_signal = motion_ghosting(signal, s.ghosting, rng) if s.ghosting > 0 else signal.astype(np.complex64)
    noise = s.noise * (rng.standard_normal(volume.shape, dtype=np.float32)
                       + 1j * rng.standard_normal(volume.shape, dtype=np.float32))
    magnitude = np.abs(complex_signal + noise) * s.gain
    image = np.clip(np.rint(magnitude), 0, np.iinfo(np.int16).max).astype(np.int16)
    masks = {r: raters[i].astype(np.uint8) for i, r in enumerate(RATERS)}
    return image, masks, truth.astype(np.uint8)


def _to_image(array: np.ndarray, size: PhantomSize, z_start: float) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    nx, ny, _ = size.shape_xyz
    sx, sy, sz = size.spacing_xyz
    image.SetSpacing((float(sx), float(sy), float(sz)))
    image.SetOrigin((-(nx - 1) / 2 * sx, -(ny - 1) / 2 * sy, float(z_start)))
    image.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return image


def write_phantom_registry(out: "str | os.PathLike", volunteers: int = 10, patients: int = 42, seed: int = 0,
                           size: str = "small", overwrite: bool = False,
                           log: "Callable[[str], None] | None" = print) -> Path:
    """Write a synthetic registry to ``out`` (atomically; an existing folder only with ``overwrite``)."""
    from nnunet_nerve.errors import NerveError

    if size not in SIZES:
        raise NerveError(f"phantom size {size!r}: expected one of {', '.join(SIZES)}")
    from nnunet_nerve.parameters import require_number

    require_number(seed, "--seed", minimum=0, integer=True)
    if volunteers < 0 or patients < 0 or volunteers + patients == 0:
        raise NerveError(f"phantom: need at least one subject (got {volunteers} volunteers, {patients} patients)")
    log = log or (lambda message: None)
    grid = SIZES[size]
    out = Path(out)
    subjects = phantom_subjects(volunteers, patients, grid, seed)
    with atomic_directory(out, overwrite=overwrite, what="registry folder") as tmp:
        for i, s in enumerate(subjects):
            log(f"phantom {s.participant_id} ({i + 1}/{len(subjects)}, {s.cohort}, {s.location}, lesion {s.lesion})")
            image, masks, _ = render_subject(s, grid, seed, i)
            path = image_path(tmp, s.participant_id)
            path.parent.mkdir(parents=True)
            sitk.WriteImage(_to_image(image, grid, s.z_start), str(path), useCompression=True)
            for rater, mask in masks.items():
                mpath = mask_path(tmp, s.participant_id, rater)
                mpath.parent.mkdir(parents=True, exist_ok=True)
                sitk.WriteImage(_to_image(mask, grid, s.z_start), str(mpath), useCompression=True)
        rows = [Participant(s.participant_id, s.cohort, s.location,
                            {"age": str(s.age), "sex": s.sex, "lesion": s.lesion, **lesion_columns(s, grid)})
                for s in subjects]
        write_participants(tmp / PARTICIPANTS_FILE, rows)
        write_rater_table(tmp / RATERS_FILE, [RaterRow(r, {"experience_rank": str(i)})
                                              for i, r in enumerate(RATERS, start=1)])
        description = {
            "Name": "nnunet-nerve synthetic thigh MR neurography phantom",
            "BIDSVersion": "1.9.0",
            "DatasetType": "raw",
            "GeneratedBy": [{"Name": "nnunet-nerve phantom", "Version": __version__}],
            "nnunet_nerve_phantom": {"seed": seed, "size": size, "volunteers": volunteers, "patients": patients,
                                     "raters": list(RATERS)},
            "Note": "Synthetic images for exercising pipelines; no evidence of accuracy on real scans.",
        }
        (tmp / "dataset_description.json").write_text(json.dumps(description, indent=2))
    log(f"wrote {out} ({volunteers} volunteers, {patients} patients, size {size}, seed {seed})")
    return out
