"""Registry -> nnU-Net raw dataset conversion (in the spirit of nnunetv2/dataset_conversion)."""
