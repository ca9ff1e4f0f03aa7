"""`nnunet_nerve.api` called from Python beside the same verb of the real `nnunet-nerve` console
script on the same tiny input: the function returns what the command writes (same files, same
numbers), and bad input raises NerveError with the one line the command prints after `error:`.

One small phantom registry (2 volunteers, 2 patients) is written and converted once per module;
predictions are the raters' own masks written as NIfTI (no nnU-Net training here).
"""
from __future__ import annotations

import csv
import inspect
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run, script
from nnunet_nerve import api
from nnunet_nerve.errors import NerveError

PHANTOM = dict(volunteers=2, patients=2, seed=3)


def cli(*args, env=None, check=True):
    return run([script("nnunet-nerve"), *map(str, args)], env=env, check=check, timeout=600)


def array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def files_under(root: Path) -> list:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def same_images(a: Path, b: Path) -> None:
    """Same files below both folders; images with equal voxels and grids, other files equal bytes."""
    assert files_under(a) == files_under(b)
    for rel in files_under(a):
        if rel.endswith((".nii.gz", ".nii", ".mha", ".nrrd")):
            ia, ib = sitk.ReadImage(str(a / rel)), sitk.ReadImage(str(b / rel))
            assert np.array_equal(sitk.GetArrayFromImage(ia), sitk.GetArrayFromImage(ib)), rel
            assert (ia.GetSpacing(), ia.GetOrigin(), ia.GetDirection()) == \
                   (ib.GetSpacing(), ib.GetOrigin(), ib.GetDirection()), rel
        elif not rel.endswith(".png"):  # matplotlib stamps PNGs; their pixels are not the API's business
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A phantom registry written by the API and by the CLI, and the API's registry converted by
    both (nnU-Net folders under the module's temp dir)."""
    root = tmp_path_factory.mktemp("api")
    env_values = {k: str(root / k) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    env_values["MPLCONFIGDIR"] = str(root / "mpl")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env_values.items():
            Path(value).mkdir()
            mp.setenv(key, value)
        env = dict(os.environ)
        messages = []
        registry = api.phantom(root / "registry_api", **PHANTOM, progress=messages.append)
        cli("phantom", root / "registry_cli", *(f"--{k}={v}" for k, v in PHANTOM.items()), env=env)
        dataset = api.convert(registry, 901, name="Api", folds=2)
        cli("convert", registry, "-d", 902, "--name", "Api", "--folds", 2, env=env)
        yield dict(root=root, env=env, registry=registry, dataset=dataset, phantom_messages=messages)


def test_phantom_and_check(study):
    root = study["root"]
    assert study["registry"] == root / "registry_api"
    same_images(root / "registry_api", root / "registry_cli")
    assert len(study["phantom_messages"]) == 4 + 1  # one line per subject and the closing summary

    checked = api.check(study["registry"])
    registry = checked.registry
    assert [p.participant_id for p in registry.participants] == ["sub-001", "sub-002", "sub-003", "sub-004"]
    assert [p.cohort for p in registry.participants].count("volunteer") == 2
    line = cli("check", study["registry"], env=study["env"]).stdout
    assert f"ok, 4 subjects (2 volunteers, 2 patients), raters {', '.join(registry.raters)}" in line
    assert checked.agreement_lines and all(text in line for text in checked.agreement_lines)


def test_convert(study):
    raw = Path(study["env"]["nnUNet_raw"])
    assert study["dataset"] == raw / "Dataset901_Api"
    api_dataset, cli_dataset = study["dataset"], raw / "Dataset902_Api"
    for sub in ("imagesTr", "labelsTr", "raters"):
        same_images(api_dataset / sub, cli_dataset / sub)
    preprocessed = Path(study["env"]["nnUNet_preprocessed"])
    splits = [json.loads((preprocessed / d / "splits_final.json").read_text()) for d in ("Dataset901_Api",
                                                                                      "Dataset902_Api")]
    assert splits[0] == splits[1] and len(splits[0]) == 2


def _predictions(study, tmp_path) -> Path:
    """Rater BW's masks as a method's predictions, named <case>.nii.gz."""
    rater_dir = sorted((study["dataset"] / "raters").iterdir())[1]
    pred = tmp_path / "BWpred"
    pred.mkdir()
    for f in rater_dir.iterdir():
        (pred / f.name).write_bytes(f.read_bytes())
    return pred


def test_evaluate(study, tmp_path):
    pred = _predictions(study, tmp_path)
    messages = []
    result = api.evaluate(study["dataset"], pred=[pred], name=["Rater"], out=tmp_path / "eval_api",
                          progress=messages.append)
    cli("evaluate", "-d", study["dataset"], "--pred", pred, "--name", "Rater", "--out", tmp_path / "eval_cli",
        env=study["env"])
    assert result.out == tmp_path / "eval_api" and result.agreement is None
    assert messages[0].startswith("evaluating 4 case(s) of Dataset901_Api: Rater against consensus")
    for name in ("per_case.csv", "table1.csv", "statistics.csv", "table1.md", "timing.csv"):
        assert (tmp_path / "eval_api" / name).read_text() == (tmp_path / "eval_cli" / name).read_text(), name

    # The returned rows are the numbers per_case.csv holds; Dice checked from its definition.
    with open(tmp_path / "eval_cli" / "per_case.csv") as f:
        written = {(r["case"], r["comparison"]): r for r in csv.DictReader(f)}
    auto_gt = [r for r in result.evaluation.rows if r["comparison"] == "Auto-GT"]
    assert len(auto_gt) == 4
    for row in auto_gt:
        assert float(written[(row["case"], "Auto-GT")]["dice"]) == pytest.approx(row["dice"], abs=1e-6)
        a = array(pred / f"{row['case']}.nii.gz") != 0
        b = array(study["dataset"] / "labelsTr" / f"{row['case']}.nii.gz") != 0
        assert row["dice"] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()), abs=1e-9)


def test_biomarkers_one_scan_and_postprocess(study, tmp_path):
    dataset, case = study["dataset"], "sub-003"
    image, mask = dataset / "imagesTr" / f"{case}_0000.nii.gz", dataset / "labelsTr" / f"{case}.nii.gz"
    result = api.biomarkers(tmp_path / "bio_api", image=image, mask=mask, k=2.5)
    cli("biomarkers", "--image", image, "--mask", mask, "--k", 2.5, "--out", tmp_path / "bio_cli", env=study["env"])
    same_images(tmp_path / "bio_api", tmp_path / "bio_cli")
    summary = json.loads((tmp_path / "bio_cli" / "summary.json").read_text())
    assert result.nerve_found and result.summary["volume_ml"] == pytest.approx(summary["volume_ml"], rel=1e-9)

    report = api.postprocess(dataset / "labelsTr", tmp_path / "pp_api", max_gap=2)
    cli("postprocess", dataset / "labelsTr", tmp_path / "pp_cli", "--max-gap", 2, env=study["env"])
    same_images(tmp_path / "pp_api", tmp_path / "pp_cli")
    assert report == json.loads((tmp_path / "pp_cli" / "postprocessing_nerve.json").read_text())
    assert report["rule"]["max_gap_slices"] == 2 and len(report["files"]) == 4


def test_biomarkers_batch(study, tmp_path):
    results = api.biomarkers(tmp_path / "batch_api", masks=study["dataset"] / "labelsTr", dataset=study["dataset"])
    cli("biomarkers", "--masks", study["dataset"] / "labelsTr", "--dataset", study["dataset"],
        "--out", tmp_path / "batch_cli", env=study["env"])
    same_images(tmp_path / "batch_api", tmp_path / "batch_cli")
    assert sorted(results) == ["sub-001", "sub-002", "sub-003", "sub-004"]


def test_trainer_dir_and_doctor(study):
    assert cli("trainer-dir", env=study["env"]).stdout.strip() == api.trainer_dir()
    result = api.doctor()
    proc = cli("doctor", env=study["env"], check=False)
    assert proc.returncode == (0 if result.training_can_work else 1)
    printed = [line.split("] ", 1)[1].split(":", 1)[0] for line in proc.stdout.splitlines() if line.startswith("[")]
    assert printed == [c.name for c in result.checks]


def _bad_inputs(root: Path, study) -> list:
    """(api call, the same request as CLI arguments, a path the message must name)."""
    missing = root / "missing.nii.gz"
    return [
        (lambda: api.phantom(study["registry"], volunteers=1, patients=0),
         ["phantom", study["registry"], "--volunteers", 1, "--patients", 0], study["registry"]),
        (lambda: api.check(root), ["check", root], root),
        (lambda: api.convert(root, 903), ["convert", root, "-d", 903], root),
        (lambda: api.evaluate(study["dataset"], pred=[root / "nopred"], out=root / "e"),
         ["evaluate", "-d", study["dataset"], "--pred", root / "nopred", "--out", root / "e"], root / "nopred"),
        (lambda: api.biomarkers(root / "b", image=missing, mask=missing),
         ["biomarkers", "--image", missing, "--mask", missing, "--out", root / "b"], missing),
        (lambda: api.postprocess(missing, root / "p.nii.gz"), ["postprocess", missing, root / "p.nii.gz"], missing),
        (lambda: api.segment(missing, root / "s", model=root / "nomodel"),
         ["segment", missing, root / "s", "--model", root / "nomodel"], missing),
        (lambda: api.demo(root / "d", ablation=True, full=True), ["demo", root / "d", "--ablation", "--full"], None),
        (lambda: api.biomarkers(root / "b", image=missing), ["biomarkers", "--image", missing, "--out", root / "b"],
         None),
    ]


def test_bad_input_raises_the_error_the_command_prints(study, tmp_path):
    for call, args, named in _bad_inputs(tmp_path, study):
        with pytest.raises(NerveError) as raised:
            call()
        message = str(raised.value)
        if named is not None:
            assert str(named) in message, message
        proc = cli(*args, env=study["env"], check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.strip().splitlines()[-1] == f"error: {message}", (args, proc.stderr)
        assert not (tmp_path / "e").exists() and not (tmp_path / "b").exists() and not (tmp_path / "s").exists()


def test_every_cli_option_is_a_parameter_of_its_api_function():
    """The CLI hands options to the api by name: a new option without its api parameter would be
    dropped silently, and an api default the CLI does not use would make two sources of defaults."""
    import argparse

    from nnunet_nerve.app.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(sub.choices) == sorted(name.replace("_", "-") for name in api.__all__ if name.islower())
    for verb, parser in sub.choices.items():
        params = inspect.signature(getattr(api, verb.replace("-", "_"))).parameters
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.dest in params, f"{verb}: option {action.dest} is no parameter of api.{verb}"
            if params[action.dest].default is not inspect.Parameter.empty and not action.required:
                expected = params[action.dest].default
                expected = list(expected) if isinstance(expected, tuple) else expected  # append options: a list
                assert action.default == expected, f"{verb} {action.dest}"


def test_post_processing_defaults_agree_wherever_a_verb_post_processes():
    """postprocess, biomarkers and segment each carry postprocess's four options in their
    signatures (the CLI reads its defaults there); they and PostprocessRule's must not drift."""
    from nnunet_nerve.biomarkers.postprocess import PostprocessRule

    rule = PostprocessRule()
    expected = {"min_extent": rule.min_extent_fraction, "max_branch_distance": rule.max_branch_distance_mm,
                "max_gap": rule.max_gap_slices, "side_fraction": rule.side_piece_fraction}
    for function in (api.postprocess, api.biomarkers, api.segment):
        parameters = inspect.signature(function).parameters
        assert {name: parameters[name].default for name in expected} == expected, function.__name__
