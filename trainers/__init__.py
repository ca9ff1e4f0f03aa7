"""The folder that nnU-Net's ``nnUNet_extTrainer`` points at (``nnunet-nerve trainer-dir``).

nnU-Net imports every top-level module of this folder as a top-level module and looks the
trainer up by class name. Each module here only re-exports classes from
``nnunet_nerve.training``, where they live: a script or notebook imports them from there, from
any working directory, and everything pickled into worker processes has a stable module path.
"""
