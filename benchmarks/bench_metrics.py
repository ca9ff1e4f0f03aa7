"""Time to evaluate one paper-size case: nnunet_nerve.metrics against medpy, same masks, one run.

The case is the paper's geometry: 60 x 640 x 768 voxels (z, y, x) at 4.0 x 0.52 x 0.52 mm,
with a nerve-like reference (the sciatic nerve, ~0.14 % of the voxels, drifting through
the stack and splitting into tibial and peroneal branches) and a prediction that errs as a
model does (boundary shifted and grown, a missed slice, a false-positive blob like a vein).

Prints the seconds of each, their ratio, and whether the values agree:
ours must equal medpy's own surface distances (HD95 as the larger directed 95th
percentile, HD and ASSD directly); medpy's ``hd95`` pools both directions and is printed
for information.

    .venv/bin/python benchmarks/bench_metrics.py [--repeats 5] [--seed 0]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from nnunet_nerve import metrics

SHAPE = (60, 640, 768)
SPACING = (4.0, 0.52, 0.52)


def paper_case(seed: int = 0) -> tuple:
    """(prediction, reference) boolean masks of SHAPE, see the module docstring."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    cy = 330 + 0.8 * z + rng.normal(0, 0.8, (SHAPE[0], 1, 1))
    cx = 420 - 0.5 * z + rng.normal(0, 0.8, (SHAPE[0], 1, 1))
    radius = 14.0 + rng.normal(0, 0.6, (SHAPE[0], 1, 1))
    ref = (y - cy) ** 2 + ((x - cx) * 1.2) ** 2 < radius ** 2
    split = SHAPE[0] // 2  # tibial and peroneal branches below the split
    branch_x = cx + 1.5 * np.maximum(z - split, 0)
    ref |= ((y - cy) ** 2 + (x - branch_x) ** 2 < (0.7 * radius) ** 2) & (z >= split)
    pred = np.roll(ref, (1, -2), axis=(1, 2))
    pred |= np.roll(pred, 1, axis=2)
    pred[int(rng.integers(0, SHAPE[0]))] = False
    pred[10:14, 200:215, 300:312] = True
    return pred, ref


def best_of(fn, repeats: int) -> tuple:
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of ours (best taken); medpy runs once")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from medpy.metric import binary as medpy_binary

    pred, ref = paper_case(args.seed)
    print(f"case: {SHAPE} voxels at {SPACING} mm; reference {ref.mean() * 100:.3f} % of the voxels, "
          f"prediction {pred.mean() * 100:.3f} %")
    t_ours_hd95, ours_hd95 = best_of(lambda: metrics.hd95(pred, ref, SPACING), args.repeats)
    t_ours_all, ours = best_of(lambda: metrics.all_metrics(pred, ref, SPACING), args.repeats)
    t_medpy, medpy_hd95 = best_of(lambda: medpy_binary.hd95(pred, ref, voxelspacing=SPACING), 1)

    surface = vars(medpy_binary)["__surface_distances"]
    d_pred, d_ref = surface(pred, ref, SPACING, 1), surface(ref, pred, SPACING, 1)
    reference = {"hd95_mm": max(np.percentile(d_pred, 95), np.percentile(d_ref, 95)),
                 "hd_mm": max(d_pred.max(), d_ref.max()),
                 "assd_mm": np.concatenate([d_pred, d_ref]).mean(), "dice": medpy_binary.dc(pred, ref)}
    agree = all(np.isclose(ours[k], v, rtol=1e-12, atol=1e-12) for k, v in reference.items())

    print(f"ours  hd95:                    {t_ours_hd95 * 1000:8.1f} ms (best of {args.repeats})")
    print(f"ours  all five metrics:        {t_ours_all * 1000:8.1f} ms (best of {args.repeats})")
    print(f"medpy hd95:                    {t_medpy * 1000:8.1f} ms (one run)")
    print(f"ratio medpy hd95 / ours hd95:  {t_medpy / t_ours_hd95:8.1f} x")
    for key, value in reference.items():
        print(f"  {key:8s} ours {ours[key]:.6f}   medpy surface distances {value:.6f}")
    print(f"  medpy hd95 (both directions pooled, for information): {medpy_hd95:.6f}")
    print("values agree" if agree else "VALUES DIFFER")
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
