"""The phantom's subjects (``phantom``): the grids, each subject's drawn parameters, and the
anatomy that rendering and participants.tsv share (the nerve's ellipses at a height, the
lesion's profile and true extent, the thigh's taper). Lengths in mm; z is the height above
the knee joint line. Everything is deterministic for (seed, subject index).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


def nerve_components(s: Subject, z: float, scale: float, nerve_scale: float) -> list:
    """The nerve at height z as (centre x, centre y, semi-axis x, semi-axis y, swelling, is_peroneal)
    ellipses: tibial (medial, larger) and peroneal (lateral), merged into one oval above the split."""
    a, b = s.thigh_a * scale * thigh_taper(z), s.thigh_b * scale * thigh_taper(z)
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


def lesion_columns(s: Subject, size: PhantomSize) -> dict:
    """participants.tsv columns recording the true lesion (``n/a`` without one)."""
    extent = lesion_extent(s, size)
    return {"lesion_first_slice": str(extent[0]) if extent else "n/a",
            "lesion_last_slice": str(extent[1]) if extent else "n/a"}


def thigh_taper(z: float) -> float:
    """Thigh girth relative to mid-thigh: narrower at the knee, wider at the hip."""
    return 0.8 + 0.36 * z / THIGH_LENGTH_MM


def phantom_subjects(volunteers: int, patients: int, size: PhantomSize, seed: int) -> list:
    """The drawn subjects: volunteers first, ids sub-001, sub-002, ..."""
    total = volunteers + patients
    width = max(3, len(str(total)))
    cohorts = ["volunteer"] * volunteers + ["patient"] * patients
    return [draw_subject(i, f"sub-{i + 1:0{width}d}", c, size, seed) for i, c in enumerate(cohorts)]
