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
phantom exercises the pipelines; it is no evidence of accuracy on real scans.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from nnunet_nerve import __version__
from nnunet_nerve.io.atomic import atomic_directory
from nnunet_nerve.registry.dataset_info import PARTICIPANTS_FILE, RATERS_FILE, Participant, write_participants
from nnunet_nerve.registry.reader import RaterRow, image_path, mask_path, write_rater_table

#: The phantom's raters, most experienced first (the order of its raters.tsv).
RATERS = ("OS", "BW", "AB")
#: Thigh length (mm from the knee joint line to the hip) on which stack positions are placed.
THIGH_LENGTH_MM = 420.0


@dataclass(frozen=True)
class PhantomSize:
    """The grid of one stack: (nx, ny, nz) voxels of (sx, sy, sz) mm, and how the anatomy is scaled
    (``anatomy_scale`` shrinks the thigh to fit the field of view; ``nerve_scale`` enlarges the
    nerve relative to it so that it stays a few pixels across)."""

    name: str
    shape_xyz: tuple
    spacing_xyz: tuple
    anatomy_scale: float
    nerve_scale: float


SIZES = {
    # 180 x 160 mm field of view, 80 mm stacks: small enough for tests and the 2-core CPU demo.
    "small": PhantomSize("small", (144, 128, 20), (1.25, 1.25, 4.0), anatomy_scale=0.8, nerve_scale=1.35),
    # The paper's protocol: 60 slices over a 384 x 330 mm field of view, 0.52 x 0.52 x 4.0 mm.
    "paper": PhantomSize("paper", (738, 635, 60), (0.52, 0.52, 4.0), anatomy_scale=1.0, nerve_scale=1.0),
}

# Relative T2 TSE intensities (subcutaneous fat = 1).
FAT, MUSCLE, SKIN, FASCIA, CORTEX, MARROW = 1.0, 0.32, 0.55, 0.22, 0.05, 0.88
FASCICLE, INTERFASCICULAR = 0.40, 0.72
ARTERY, DEEP_VEIN, PERFORATOR, SAPHENOUS = 0.07, 0.80, 0.62, 0.22

# Muscle seeds in the fascia ellipse's normalised coordinates (x: towards medial, y: posterior).
MUSCLE_SEEDS = np.array([
    [0.00, -0.78],   # rectus femoris
    [-0.62, -0.32],  # vastus lateralis
    [0.48, -0.45],   # vastus medialis
    [-0.08, -0.48],  # vastus intermedius
    [0.68, -0.05],   # sartorius
    [0.88, 0.25],    # gracilis
    [0.42, 0.10],    # adductor longus
    [0.30, 0.38],    # adductor magnus
    [0.34, 0.78],    # semimembranosus
    [0.05, 0.88],    # semitendinosus
    [-0.45, 0.62],   # biceps femoris
])


@dataclass(frozen=True)
class Subject:
    """Drawn parameters of one synthetic subject (lengths in mm; z is the height above the knee)."""

    participant_id: str
    cohort: str
    location: str
    age: int
    sex: str
    z_start: float
    thigh_a: float
    thigh_b: float
    fat: float
    center: tuple
    nerve_uv: tuple
    nerve_drift: tuple
    nerve_r: float
    nerve_ratio: float
    z_split: float
    lesion: str
    lesion_z: float
    lesion_length: float
    lesion_amplitude: float
    has_perforator: bool
    ghosting: float
    noise: float
    gain: float
    seed_jitter: np.ndarray
    warp_phase: float
    muscle_gain: np.ndarray
    fascicles: np.ndarray
    rater_bias: np.ndarray
    rater_misses_branch: np.ndarray
    rater_phase: np.ndarray


def stack_start(location: str, stack_mm: float, rng: np.random.Generator) -> float:
    """Height (mm above the knee) of the first slice for a stack placed distally, medially or proximally."""
    if location == "proximal":
        top = THIGH_LENGTH_MM - rng.uniform(5, 30)
        return top - stack_mm
    if location == "medial" or location == "n/a":
        return THIGH_LENGTH_MM / 2 - stack_mm / 2 + rng.uniform(-15, 15)
    return rng.uniform(25, 40)  # distal: starts just above the knee


def draw_subject(index: int, participant_id: str, cohort: str, size: PhantomSize, seed: int) -> Subject:
    """Draw one subject's parameters from ``default_rng([seed, index])`` (independent of the others)."""
    rng = np.random.default_rng([seed, index])
    if cohort == "volunteer":
        location = ["distal", "medial"][int(rng.integers(2))]
    else:
        location = ["distal", "medial", "proximal"][int(rng.choice(3, p=[0.5, 0.3, 0.2]))]
    stack_mm = size.shape_xyz[2] * size.spacing_xyz[2]
    z_start = stack_start(location, stack_mm, rng)
    # The sciatic nerve divides 5-11 cm above the knee; in a distal stack at least 30 % of it lies below.
    low = max(50.0, z_start + 0.3 * stack_mm) if location == "distal" else 50.0
    z_split = rng.uniform(low, max(low + 5.0, min(110.0, z_start + 0.75 * stack_mm) if location == "distal" else 110.0))
    lesion = "none" if cohort == "volunteer" else ["focal", "extended"][int(rng.random() < 0.4)]
    a = rng.uniform(70, 86)
    hex_u, hex_v = np.meshgrid(np.arange(-1, 1.01, 0.36), np.arange(-1, 1.01, 0.36 * np.sqrt(3) / 2))
    hex_u = hex_u + (np.arange(hex_u.shape[0])[:, None] % 2) * 0.18
    fasc = np.stack([hex_u.ravel(), hex_v.ravel()], axis=1)
    fasc = fasc + rng.normal(0, 0.06, fasc.shape)
    fasc = fasc[np.hypot(fasc[:, 0], fasc[:, 1]) < 0.85]
    return Subject(
        participant_id=participant_id, cohort=cohort, location=location,
        age=int(rng.integers(22, 40) if cohort == "volunteer" else rng.integers(25, 80)),
        sex=["F", "M"][int(rng.integers(2))],
        z_start=float(z_start), thigh_a=a, thigh_b=a * rng.uniform(0.82, 0.92),
        fat=rng.uniform(6, 14) if cohort == "volunteer" else rng.uniform(7, 22),
        center=(rng.uniform(-6, 6), rng.uniform(-4, 4)),
        nerve_uv=(rng.uniform(-0.08, 0.1), rng.uniform(0.48, 0.6)),
        nerve_drift=(rng.uniform(-0.06, 0.06), rng.uniform(-0.04, 0.04)),
        nerve_r=rng.uniform(6.0, 7.5), nerve_ratio=rng.uniform(0.6, 0.72),
        z_split=float(z_split), lesion=lesion,
        lesion_z=float(z_start + rng.uniform(0.2, 0.8) * stack_mm),
        lesion_length=rng.uniform(12, 40) if lesion == "focal" else 3 * stack_mm,
        lesion_amplitude=rng.uniform(0.35, 0.8) if lesion == "focal" else rng.uniform(0.15, 0.4),
        has_perforator=bool(rng.random() < 0.6),
        ghosting=float(rng.uniform(0.7, 1.2)) if cohort == "patient" and rng.random() < 0.3 else 0.0,
        noise=rng.uniform(0.015, 0.035), gain=rng.uniform(500, 900),
        seed_jitter=rng.normal(0, 0.05, MUSCLE_SEEDS.shape),
        warp_phase=float(rng.uniform(0, 2 * np.pi)),
        muscle_gain=rng.uniform(0.88, 1.12, len(MUSCLE_SEEDS)),
        fascicles=fasc,
        rater_bias=rng.normal(0, 0.12, len(RATERS)) + np.array([-0.15, 0.1, 0.0]),
        rater_misses_branch=rng.random(len(RATERS)) < 0.5,
        rater_phase=rng.uniform(0, 2 * np.pi, (len(RATERS), size.shape_xyz[2], 4)),
    )


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


def nerve_components(s: Subject, z: float, scale: float, nerve_scale: float) -> list:
    """The nerve at height z as (centre x, centre y, semi-axis x, semi-axis y, swelling, is_peroneal)
    ellipses: tibial (medial, larger) and peroneal (lateral), merged into one oval above the split."""
    a, b = s.thigh_a * scale * _taper(z), s.thigh_b * scale * _taper(z)
    t = (z - s.z_start) / 100.0
    cx = s.center[0] + (s.nerve_uv[0] + s.nerve_drift[0] * t) * a
    cy = s.center[1] + (s.nerve_uv[1] + s.nerve_drift[1] * t) * b
    swell = 1.0 + lesion_profile(s, z)
    r = s.nerve_r * scale * nerve_scale * swell
    below = max(0.0, s.z_split - z)
    separation = 0.28 * below * scale
    tib = (cx + 0.36 * r + 0.6 * separation, cy + 0.25 * separation, 0.64 * r, s.nerve_ratio * r, swell, False)
    per = (cx - 0.42 * r - 0.6 * separation, cy + 0.1 * separation, 0.52 * r, 0.85 * s.nerve_ratio * r, swell, True)
    return [tib, per]


def lesion_profile(s: Subject, z: float) -> float:
    """Relative swelling (and hyperintensity) of the nerve at height z: 0 for volunteers, a Gaussian
    bump for a focal lesion, a broad plateau for an extended one."""
    if s.lesion == "none":
        return 0.0
    return float(s.lesion_amplitude * np.exp(-0.5 * ((z - s.lesion_z) / (s.lesion_length / 2.5)) ** 2))


def lesion_extent(s: Subject, size: PhantomSize) -> "tuple[int, int] | None":
    """The true lesion as (first slice, last slice) of the stack: the slices whose swelling
    (``lesion_profile``) is at least half the lesion's peak (its full width at half maximum,
    clipped to the stack); None without a lesion or when it lies outside the stack."""
    if s.lesion == "none":
        return None
    nz, sz = size.shape_xyz[2], size.spacing_xyz[2]
    inside = [k for k in range(nz) if lesion_profile(s, s.z_start + k * sz) >= s.lesion_amplitude / 2]
    return (inside[0], inside[-1]) if inside else None


def _lesion_columns(s: Subject, size: PhantomSize) -> dict:
    """participants.tsv columns recording the true lesion (``n/a`` without one)."""
    extent = lesion_extent(s, size)
    return {"lesion_first_slice": str(extent[0]) if extent else "n/a",
            "lesion_last_slice": str(extent[1]) if extent else "n/a"}


def _taper(z: float) -> float:
    """Thigh girth relative to mid-thigh: narrower at the knee, wider at the hip."""
    return 0.8 + 0.36 * z / THIGH_LENGTH_MM


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def render_slice(s: Subject, k: int, size: PhantomSize, X: np.ndarray, Y: np.ndarray) -> tuple:
    """One axial slice: (relative intensity image, true nerve mask, rater masks [n_raters, ny, nx]).

    Only the thigh's bounding box (plus a margin) is computed; the rest is air (0)."""
    z = s.z_start + k * size.spacing_xyz[2]
    a = s.thigh_a * size.anatomy_scale * _taper(z) * 1.05 + 3 * max(size.spacing_xyz[:2])
    b = s.thigh_b * size.anatomy_scale * _taper(z) * 1.05 + 3 * max(size.spacing_xyz[:2])
    cols = np.nonzero(np.abs(X[0] - s.center[0]) <= a)[0]
    rows = np.nonzero(np.abs(Y[:, 0] - s.center[1]) <= b)[0]
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    image = np.zeros(X.shape, np.float32)
    truth = np.zeros(X.shape, bool)
    raters = np.zeros((len(RATERS),) + X.shape, bool)
    image[box], truth[box], raters[(slice(None),) + box] = _render_thigh(s, k, size, X[box], Y[box])
    return image, truth, raters


def _render_thigh(s: Subject, k: int, size: PhantomSize, X: np.ndarray, Y: np.ndarray) -> tuple:
    sx, sy, sz = size.spacing_xyz
    pixel = min(sx, sy)
    scale = size.anatomy_scale
    z = s.z_start + k * sz
    a, b = s.thigh_a * scale * _taper(z), s.thigh_b * scale * _taper(z)
    x, y = X - s.center[0], Y - s.center[1]
    image = np.zeros(X.shape, np.float32)
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
    # Femur: dark cortex, bright marrow; wider towards the knee.
    fx, fy = -0.06 * a, -0.12 * b
    r_bone = (12.5 + 9 * np.exp(-(z - 20) / 45)) * scale
    cortex = (4.0 - 2.2 * np.exp(-(z - 20) / 45)) * scale
    d_bone = np.hypot(x - fx, y - fy) - r_bone
    _paint(image, coverage(d_bone, pixel), CORTEX)
    _paint(image, coverage(d_bone + cortex, pixel), MARROW)
    # Great saphenous vein in the medial subcutaneous fat.
    _paint(image, coverage(np.hypot(x - 0.93 * a + s.fat * scale * 0.5, y - 0.15 * b) - 2.2 * scale, pixel), SAPHENOUS)
    # Nerve, its fat pad and the vessels beside it.
    comps = nerve_components(s, z, scale, size.nerve_scale)
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
    return image, truth, raters


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


def phantom_subjects(volunteers: int, patients: int, size: PhantomSize, seed: int) -> list:
    """The drawn subjects: volunteers first, ids sub-001, sub-002, ..."""
    total = volunteers + patients
    width = max(3, len(str(total)))
    cohorts = ["volunteer"] * volunteers + ["patient"] * patients
    return [draw_subject(i, f"sub-{i + 1:0{width}d}", c, size, seed) for i, c in enumerate(cohorts)]


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
                            {"age": str(s.age), "sex": s.sex, "lesion": s.lesion, **_lesion_columns(s, grid)})
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
