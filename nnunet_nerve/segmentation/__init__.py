"""`nnunet-nerve segment`: one scan through a trained nnU-Net model to a segmentation, its quality
flags and report."""
