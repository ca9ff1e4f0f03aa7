"""Registries of scans: the BIDS-style layout, its validation, the raters' consensus, the fixed split,
the conversion to an nnU-Net raw dataset and reading that dataset back, and the synthetic registry."""
