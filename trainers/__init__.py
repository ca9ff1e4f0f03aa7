"""nnUNetTrainer subclasses; the folder that nnUNet_extTrainer points at.

nnU-Net imports every top-level module of this folder as a top-level module, so modules here
import only absolute names (``nnunet_nerve...``) and hold nothing that is pickled into worker
processes: transforms, losses and the network live in ``nnunet_nerve``.
"""
