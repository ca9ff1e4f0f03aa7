"""The values Balsiger et al. (2018) published, for ``nnunet-nerve evaluate --paper-reference``.

Only values read in a source are listed, each with that source. The article's full Table 1
(the rater pairs, rater-GT, R-R, Auto-rater rows and the patients per thigh location) could not
be retrieved when this was written, so it is not here; no number is filled in from memory. The
abstract gives the automatic method against the consensus (Auto-GT) per cohort; those are the
rows below. A group that has the article can add the other rows of its Table 1 as further
``PublishedValue`` entries, with their source.
"""
from __future__ import annotations

from dataclasses import dataclass

#: Where the abstract's values were read (identical text on the publisher's page, PubMed and BORIS).
ABSTRACT = ("Balsiger F, Steindel C, Arn M, et al. Segmentation of Peripheral Nerves From Magnetic Resonance "
            "Neurography: A Fully-Automatic, Deep Learning-Based Approach. Front. Neurol. 9:777 (2018), "
            "doi:10.3389/fneur.2018.00777, abstract (https://www.frontiersin.org/article/10.3389/fneur.2018.00777/full; "
            "PubMed 30283397; https://boris.unibe.ch/120352/): 10 healthy volunteers and 42 patients; "
            "the abstract calls the distances 'Hausdorff distances', the 95th-percentile HD of Table 1 computed with "
            "EvaluateSegmentation (docs/evaluation.md)")

#: Shown above the table in table1.md.
CAVEAT = ("Published values: the paper's own numbers on its 52 real scans, **not** a result of this run. Only the "
          "abstract's Auto-GT values are included (the sources are listed below the table); the rest of the "
          "paper's Table 1 could not be retrieved for this package and is not shown rather than guessed. The "
          "paper's Auto is its FC-DenseNet trained with 4-fold cross-validation; ours are the methods evaluated here.")


@dataclass(frozen=True)
class PublishedValue:
    """One published mean ± SD: comparison as ``evaluation`` names it (``Auto-GT``), cohort
    (volunteer|patient), metric (``dice``, ``hd95`` = the paper's HD95 in mm, ``vs``), n the
    number of scans behind it, and where the value was read."""

    comparison: str
    cohort: str
    metric: str
    mean: float
    sd: float
    n: int
    source: str


PUBLISHED = (
    PublishedValue("Auto-GT", "volunteer", "dice", 0.859, 0.061, 10, ABSTRACT),
    PublishedValue("Auto-GT", "volunteer", "hd95", 13.9, 26.6, 10, ABSTRACT),
    PublishedValue("Auto-GT", "volunteer", "vs", 0.930, 0.054, 10, ABSTRACT),
    PublishedValue("Auto-GT", "patient", "dice", 0.719, 0.128, 42, ABSTRACT),
    PublishedValue("Auto-GT", "patient", "hd95", 12.4, 12.1, 42, ABSTRACT),
    PublishedValue("Auto-GT", "patient", "vs", 0.897, 0.109, 42, ABSTRACT),
)
