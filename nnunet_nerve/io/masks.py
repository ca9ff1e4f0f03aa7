"""Checking that an array is a binary mask (0 = background, 1 = nerve)."""
from __future__ import annotations

import numpy as np

from nnunet_nerve.errors import NerveError


def binary_mask(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    """The mask as booleans; NerveError naming ``name`` unless every value is 0 or 1."""
    if ((mask != 0) & (mask != 1)).any():
        values = np.unique(mask)
        shown = ", ".join(f"{v:g}" for v in values[:8].tolist()) + (", ..." if values.size > 8 else "")
        raise NerveError(f"{name}: mask is not binary (values {shown}); expected 0 = background and 1 = nerve")
    return mask.astype(bool)
