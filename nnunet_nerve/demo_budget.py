"""The demo's training budget, shared by both demo trainers (a demo-sized schedule, not the paper's).

Chosen so that `nnunet-nerve demo` trains both networks on a 2-core laptop CPU within its
20-minute goal on the small phantom registry (see docs/demo.md for the measured times).
"""
DEMO_EPOCHS = 16
DEMO_ITERATIONS = 12
DEMO_VAL_ITERATIONS = 2
DEMO_BATCH_SIZE = 8
#: Checkpoint every few epochs, so that an interrupted demo resumes with `nnUNetv2_train --c`.
DEMO_SAVE_EVERY = 2
