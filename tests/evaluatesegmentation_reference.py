"""The paper's HD95 written out from its definition, by brute force over voxel pairs: the
independent reference the tests check ``metrics.hd95_evaluatesegmentation`` against.

EvaluateSegmentation (Taha & Hanbury, ``HDRFDST@0.95@ -unit millimeter``): every voxel of
A\\B with its distance (mm, between voxel centres) to the nearest voxel of B, every voxel of
B\\A with its distance to the nearest voxel of A, both lists pooled and sorted ascending; the
value is ``sorted[int(0.95 * (n - 1))]``. Nothing listed (identical masks): 0. Both masks
empty: 0; exactly one empty: inf (the tool itself prints no value then).
"""
from __future__ import annotations

import math

import numpy as np


def nearest_distances(points: np.ndarray, targets: np.ndarray, chunk: int = 256) -> np.ndarray:
    """For every point (rows, mm) the smallest Euclidean distance to any target, every pair tried."""
    out = []
    for start in range(0, len(points), chunk):
        diff = points[start:start + chunk, None, :] - targets[None, :, :]
        out.append(np.sqrt((diff ** 2).sum(axis=-1)).min(axis=1))
    return np.concatenate(out) if out else np.zeros(0)


def paper_hd95_brute_force(a, b, spacing) -> float:
    """See the module docstring."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if not a.any() or not b.any():
        return 0.0 if a.any() == b.any() else math.inf
    step = np.asarray(spacing, dtype=float)
    listed = np.concatenate([nearest_distances(np.argwhere(a & ~b) * step, np.argwhere(b) * step),
                             nearest_distances(np.argwhere(b & ~a) * step, np.argwhere(a) * step)])
    if listed.size == 0:
        return 0.0
    ordered = sorted(listed.tolist())
    return ordered[int(0.95 * (len(ordered) - 1))]
