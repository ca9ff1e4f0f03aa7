"""The demo's training budget, shared by both demo trainers (a demo-sized schedule, not the paper's).

Chosen so that `nnunet-nerve demo` trains both networks on a 2-core laptop CPU within its
20-minute goal on the small phantom registry (docs/demo.md has the measured times).
`nnunet-nerve demo --epochs E --iterations I` changes it for one demo: the command passes it to
the nnUNetv2_train processes through the environment variables below.
"""
import os

EPOCHS_VARIABLE = "NNUNET_NERVE_DEMO_EPOCHS"
ITERATIONS_VARIABLE = "NNUNET_NERVE_DEMO_ITERATIONS"
DEFAULT_EPOCHS = 12
DEFAULT_ITERATIONS = 12
DEMO_VAL_ITERATIONS = 2
DEMO_BATCH_SIZE = 8
#: Patch (pixels) for both networks: 80 x 80 mm of the small phantom's 1.25 mm grid.
DEMO_PATCH = (64, 64)
#: Checkpoint every few epochs, so that an interrupted demo resumes with `nnUNetv2_train --c`.
DEMO_SAVE_EVERY = 2


def demo_epochs() -> int:
    return int(os.environ.get(EPOCHS_VARIABLE, DEFAULT_EPOCHS))


def demo_iterations() -> int:
    return int(os.environ.get(ITERATIONS_VARIABLE, DEFAULT_ITERATIONS))
