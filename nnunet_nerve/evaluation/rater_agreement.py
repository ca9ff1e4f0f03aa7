"""How far each rater's mask is from the other raters' masks of the same subject (printed by
``nnunet-nerve check``): a wrong file, a shifted or a foreign mask stands out before it
enters the consensus.

Per subject and rater: the mean of ``metrics.dice`` (1.0 for two empty masks) between the
rater's mask and each other rater's mask; a rater below ``OUTLIER_DICE`` is an outlier.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from nnunet_nerve.evaluation.metrics import dice
from nnunet_nerve.io.images import read_image
from nnunet_nerve.registry.reader import Registry

#: A rater's mask whose mean Dice with the other raters' masks of a subject is below this is
#: flagged as an outlier by ``check`` (the paper's raters agree at Dice 0.8 to 0.9).
OUTLIER_DICE = 0.5


def mean_dice_with_others(masks: "dict[str, np.ndarray]") -> "dict[str, float]":
    """{rater: mean of ``metrics.dice`` (1.0 for two empty masks) between the rater's mask and
    each other rater's mask}, for two or more masks of one subject."""
    if len(masks) < 2:
        raise ValueError("agreement needs at least two rater masks")
    pair = {}
    raters = list(masks)
    for i, r in enumerate(raters):
        for s in raters[i + 1:]:
            pair[r, s] = pair[s, r] = dice(masks[r], masks[s])
    return {r: float(np.mean([pair[r, s] for s in raters if s != r])) for r in raters}


@dataclass
class RaterAgreement:
    """How far one rater's mask of one subject is from the other raters' masks."""

    participant_id: str
    rater: str
    mean_dice: float   # mean Dice with each other rater's mask of the subject

    @property
    def outlier(self) -> bool:
        """Below ``OUTLIER_DICE``: the mask hardly overlaps the others (a wrong file, a shift)."""
        return self.mean_dice < OUTLIER_DICE


def rater_agreement(registry: Registry) -> list:
    """A ``RaterAgreement`` per subject and rater of a checked registry (none with fewer than two raters)."""
    rows = []
    for pid in sorted(dict.fromkeys(registry.participant_ids)):
        masks = {rater: sitk.GetArrayFromImage(read_image(path)) != 0
                 for rater, path in sorted(registry.files[pid].masks.items())}
        if len(masks) < 2:
            continue
        rows += [RaterAgreement(pid, rater, dice) for rater, dice in mean_dice_with_others(masks).items()]
    return rows


def agreement_summary(rows: list, raters: list) -> list:
    """Lines for ``check``: per rater, the mean over subjects of its mean Dice with the other
    raters, its lowest subject, and a ``warning:`` line per outlier (``RaterAgreement.outlier``)."""
    if not rows:
        return []
    lines = ["rater agreement (mean Dice of each rater's mask with the other raters' masks of the same subject):"]
    for rater in raters:
        own = [r for r in rows if r.rater == rater]
        if not own:
            continue
        worst = min(own, key=lambda r: r.mean_dice)
        outliers = sum(r.outlier for r in own)
        lines.append(f"  rater {rater}: mean {np.mean([r.mean_dice for r in own]):.3f} over {len(own)} subject(s), "
                     f"lowest {worst.mean_dice:.3f} ({worst.participant_id}), {outliers} outlier(s)")
    lines += [f"warning: {r.participant_id}: rater {r.rater}: mean Dice {r.mean_dice:.3f} with the other raters, "
              f"below {OUTLIER_DICE}: check this mask" for r in rows if r.outlier]
    return lines
