"""Nerve biomarkers from a segmentation: measures along the stack, branches, lesions,
physiological post-processing, writers and the agreement with the raters."""
