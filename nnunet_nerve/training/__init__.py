"""nnU-Net training of the FC-DenseNet: the trainer classes (re-exported by the top-level ``trainers/``
folder that ``nnUNet_extTrainer`` points at), the paper's augmentation and schedule, seeds and budgets."""
