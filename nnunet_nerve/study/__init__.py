"""The whole study on the synthetic registry: the demo (both networks, Table 1, biomarkers) and the ablation."""
