"""Does the physiological post-processing help? Dice and HD95 on synthetic nerve predictions,
before and after it, against nnU-Net's keep-the-largest-component.

    .venv/bin/python benchmarks/bench_postprocess.py [--cases 40] [--seed 0] [--json FILE]

Each case is a nerve on the paper's grid spacing (0.52 x 0.52 x 4.0 mm, 60 slices, a
176 x 176 crop): a curved sciatic nerve (radius 2.5-4 mm) that splits into a tibial and a
smaller peroneal branch in half of the cases. The ground truth is that tube; the
"prediction" is the tube with the errors a 2D network makes:

* boundary noise: each slice dilated or eroded by one pixel with probability 0.2 each;
* vessel look-alikes: one to three short tubes (3-12 slices, radius 2-3.5 mm) whose axis
  runs 9-15 mm ("near") or 25-40 mm ("far") from the nerve's centreline, at least 3 mm
  from every nerve voxel (one that touches the nerve is part of it for any
  component-based rule; neither method can remove it);
* missed slices (half of the cases): one or two nerve slices missing;
* a missed junction (40 % of the split cases): the peroneal branch missing in its first slice;
* a long vessel (every tenth case): a tube beside the nerve over 60-80 % of the stack,
  which the physiological rule cannot tell from a branch (its documented failure mode).

Last line: the cost of each method on one speckled mask (``speckled_case``: what an
under-trained network predicts, thousands of scattered pieces), as a ratio to nnU-Net's.

Metrics come from ``nnunet_nerve.evaluation.metrics`` (Dice; HD95 in mm on face-connected surface
voxels). nnU-Net's rule is ``remove_all_but_largest_component`` from
``nnunetv2.postprocessing.remove_connected_components``.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy import ndimage

from nnunet_nerve.evaluation.metrics import dice, hd95_surface
from nnunet_nerve.biomarkers.postprocess import postprocess_nerve

SPACING = (4.0, 0.52, 0.52)
SHAPE = (60, 176, 176)
STRUCT_2D = np.ones((3, 3), dtype=bool)
#: Look-alikes keep at least this distance (mm) from every nerve voxel of their slice.
MIN_CLEARANCE_MM = 3.0


def _discs(shape_yx, centres_radii) -> np.ndarray:
    y = np.arange(shape_yx[0])[:, None] * SPACING[1]
    x = np.arange(shape_yx[1])[None, :] * SPACING[2]
    out = np.zeros(shape_yx, dtype=bool)
    for (cx, cy), r in centres_radii:
        out |= (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    return out


def make_case(rng: np.random.Generator, index: int) -> tuple[np.ndarray, np.ndarray, list]:
    """(ground truth, prediction, the corruptions applied)."""
    nz = SHAPE[0]
    fov = SHAPE[1] * SPACING[1]
    z = np.arange(nz) * SPACING[0]
    x0, y0 = fov / 2 + rng.uniform(-8, 8, size=2)
    ax, ay, period, phase = rng.uniform(2, 8), rng.uniform(2, 6), rng.uniform(150, 400), rng.uniform(0, 2 * np.pi)
    cx = x0 + ax * np.sin(2 * np.pi * z / period + phase)
    cy = y0 + ay * np.cos(2 * np.pi * z / period + phase)
    radius = rng.uniform(2.5, 4.0) * (1 + 0.05 * np.sin(z / 30 + phase))
    split_at = int(rng.integers(20, 45)) if rng.random() < 0.5 else nz
    angle = rng.uniform(0, 2 * np.pi)
    u = np.array([np.cos(angle), np.sin(angle)])
    truth = np.zeros(SHAPE, dtype=bool)
    branches = {}
    for k in range(nz):
        if k < split_at:
            truth[k] = _discs(SHAPE[1:], [((cx[k], cy[k]), radius[k])])
        else:
            d = min(0.6 * radius[k] + 1.2 * (k - split_at + 1), 12.0)
            tib = (np.array([cx[k], cy[k]]) - 0.6 * d * u, 0.8 * radius[k])
            per = (np.array([cx[k], cy[k]]) + d * u, 0.6 * radius[k])
            branches[k] = per
            truth[k] = _discs(SHAPE[1:], [tib, per])

    pred = truth.copy()
    applied = []
    for k in range(nz):
        roll = rng.random()
        if roll < 0.2:
            pred[k] = ndimage.binary_dilation(pred[k], STRUCT_2D)
        elif roll < 0.4:
            pred[k] = ndimage.binary_erosion(pred[k], STRUCT_2D)
    if split_at < nz and rng.random() < 0.4:
        per_first = _discs(SHAPE[1:], [branches[split_at]])
        pred[split_at] &= ~per_first
        applied.append("missed junction")
    if rng.random() < 0.5:
        missed = rng.choice(np.arange(3, nz - 3), size=int(rng.integers(1, 3)), replace=False)
        if len(missed) == 2 and abs(int(missed[0]) - int(missed[1])) < 3:
            missed = missed[:1]
        for k in missed:
            pred[k] = False
        applied.append("missed slice")
    vessels = []
    for _ in range(int(rng.integers(1, 4))):
        vessels.append(("near", rng.uniform(9, 15), int(rng.integers(3, 13))) if rng.random() < 0.5
                       else ("far", rng.uniform(25, 40), int(rng.integers(3, 13))))
    if index % 10 == 9:
        vessels.append(("long", rng.uniform(10, 14), int(nz * rng.uniform(0.6, 0.8))))
    clearance = np.stack([ndimage.distance_transform_edt(~truth[k], sampling=SPACING[1:]) for k in range(nz)])
    for kind, distance, length in vessels:
        for _attempt in range(50):   # a look-alike that touches the nerve is part of it for any component rule
            start = int(rng.integers(0, nz - length + 1))
            heading = rng.uniform(0, 2 * np.pi)
            r = rng.uniform(2.0, 3.5)
            drawn = {k: _discs(SHAPE[1:], [((cx[k] + distance * np.cos(heading),
                                             cy[k] + distance * np.sin(heading)), r)])
                     for k in range(start, start + length)}
            if all(d.any() and clearance[k][d].min() >= MIN_CLEARANCE_MM for k, d in drawn.items()):
                break
        else:
            continue
        for k, d in drawn.items():
            pred[k] |= d
        applied.append(f"{kind} vessel")
    return truth, pred, sorted(set(applied))


def nnunet_largest_component(mask: np.ndarray) -> np.ndarray:
    from nnunetv2.postprocessing.remove_connected_components import remove_all_but_largest_component_from_segmentation

    return remove_all_but_largest_component_from_segmentation(mask.astype(np.uint8), 1) > 0


METHODS = {
    "none": lambda m: m,
    "nnU-Net largest component": nnunet_largest_component,
    "nnunet-nerve postprocess": lambda m: postprocess_nerve(m, SPACING).mask,
}


def speckled_case(rng: np.random.Generator, fraction: float = 0.1) -> np.ndarray:
    """What an under-trained network predicts: a random field, smoothed in-plane over about a
    pixel and thresholded so that ``fraction`` of the voxels are foreground, in thousands of
    scattered pieces (the demo's 3-epoch smoke models give such masks: 10 % of the voxels in
    5,000 components). A worst case for the cost of post-processing, not for its quality."""
    field = ndimage.gaussian_filter(rng.random(SHAPE), sigma=(0, 1.0, 1.0))
    return field > np.quantile(field, 1 - fraction)


def _timed(fn, mask) -> tuple:
    """(fn(mask), seconds it took)."""
    t0 = time.perf_counter()
    out = fn(mask)
    return out, time.perf_counter() - t0


def speckle_timing(seed: int) -> dict:
    """Seconds of each method on one ``speckled_case`` and its number of 3D components."""
    mask = speckled_case(np.random.default_rng([seed, 1]))
    seconds = {name: _timed(fn, mask)[1] for name, fn in METHODS.items()}
    components = ndimage.label(mask, structure=np.ones((3, 3, 3)))[1]
    return {"voxels": int(mask.sum()), "components": int(components), "seconds": seconds}


def run(cases: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    rows = []
    seconds = {name: 0.0 for name in METHODS}
    for i in range(cases):
        truth, pred, applied = make_case(rng, i)
        row = {"case": i, "corruptions": applied}
        for name, fn in METHODS.items():
            out, took = _timed(fn, pred)
            seconds[name] += took
            row[name] = {"dice": dice(out, truth), "hd95": hd95_surface(out, truth, SPACING)}
        rows.append(row)
    return {"cases": rows, "seconds": seconds, "seed": seed, "spacing": SPACING, "shape": SHAPE,
            "speckled": speckle_timing(seed)}


def _summary_line(rows: list, label: str) -> str:
    parts = [f"{label:<34} n={len(rows):>3}"]
    for name in METHODS:
        d = np.array([r[name]["dice"] for r in rows])
        h = np.array([r[name]["hd95"] for r in rows])
        parts.append(f"{d.mean():.3f}±{d.std():.3f} / {np.median(h):5.1f} ({h.mean():5.1f})")
    return " | ".join(parts)


def report(result: dict) -> str:
    rows = result["cases"]
    head = (f"each method: Dice mean±sd / HD95 median (mean) in mm\n{'subset':<34} {'':>5} | "
            + " | ".join(f"{n:<28}" for n in METHODS))
    lines = [head, _summary_line(rows, "all cases")]
    for kind in ("near vessel", "far vessel", "missed slice", "missed junction", "long vessel"):
        subset = [r for r in rows if kind in r["corruptions"]]
        if subset:
            lines.append(_summary_line(subset, f"with {kind}"))
    ours, nn = "nnunet-nerve postprocess", "nnU-Net largest component"
    better = sum(r[ours]["dice"] > r[nn]["dice"] + 1e-9 for r in rows)
    worse = sum(r[ours]["dice"] < r[nn]["dice"] - 1e-9 for r in rows)
    lines.append(f"Dice: postprocess better than largest component in {better}, worse in {worse}, "
                 f"equal in {len(rows) - better - worse} of {len(rows)} cases")
    lines.append("seconds per case: " + ", ".join(f"{n} {t / len(rows):.3f}" for n, t in result["seconds"].items()))
    sp = result["speckled"]
    lines.append(f"speckled mask ({sp['voxels']} voxels in {sp['components']} components, an under-trained network): "
                 + ", ".join(f"{n} {t:.2f} s" for n, t in sp["seconds"].items() if n != "none")
                 + f"; postprocess / largest component = {sp['seconds'][ours] / sp['seconds'][nn]:.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write every case's numbers here")
    args = parser.parse_args()
    result = run(args.cases, args.seed)
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
