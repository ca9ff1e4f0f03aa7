"""Fixtures shared by the trainer tests: a tiny dataset planned and preprocessed by the real
nnUNetv2_plan_and_preprocess (once per test module that imports it) and a factory of
initialised trainers on it."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import run, script
from tiny_dataset import write_raw_dataset

DATASET_ID = 901


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory):
    """A tiny dataset planned and preprocessed by the real nnUNetv2_plan_and_preprocess."""
    import os

    from nnunet_nerve.training.trainer_dir import trainer_dir

    base = tmp_path_factory.mktemp("nnunet")
    env = dict(os.environ, nnUNet_raw=str(base / "raw"), nnUNet_preprocessed=str(base / "pre"),
               nnUNet_results=str(base / "res"), nnUNet_extTrainer=trainer_dir(), nnUNet_n_proc_DA="1",
               MPLCONFIGDIR=str(base / "mpl"))
    write_raw_dataset(base / "raw", DATASET_ID, n_train=5)
    run([script("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "-np", "1", "-npfp", "1",
         "--verify_dataset_integrity"], env=env)
    return base, env


@pytest.fixture
def trainer_factory(preprocessed, monkeypatch):
    base, env = preprocessed
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer", "nnUNet_n_proc_DA"):
        monkeypatch.setenv(key, env[key])
    folder = base / "pre" / f"Dataset{DATASET_ID:03d}_Tiny"
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())

    def make(cls_name: str = "FCDenseNetTrainer"):
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

        cls = recursive_find_trainer_class_by_name(cls_name)
        trainer = cls(dict(plans, continue_training=False), "2d", 0, dataset_json, device=torch.device("cpu"))
        trainer.initialize()
        return trainer

    return make
