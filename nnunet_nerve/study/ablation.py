"""`nnunet-nerve demo OUT --ablation`: where the gap between FC-DenseNet and nnU-Net comes from.

On the demo's synthetic registry, fold and budget, trains the paper's recipe
(``FCDenseNetTrainer_demo``), each one-hook recipe variant (``FCDenseNetTrainer_<variant>_demo``,
nnunet_nerve/training/recipe_variants.py) and nnU-Net (``nnUNetTrainer_demo``) once per seed
with ``nnUNetv2_train`` (``NNUNET_NERVE_SEED`` = the seed, nnunet_nerve/training/seeding.py), predicts
the held-out fold with ``nnUNetv2_predict``, evaluates every run with the package's
evaluation (Auto-GT per case) and writes the table of ``ablation_table`` to
``OUT/ablation/ablation.md``.

Stages 1-3 (registry, conversion, preprocessing) are the demo's and shared with it. Each run
trains into ``OUT/ablation/seed_<s>/nnUNet_results`` and predicts into
``OUT/ablation/seed_<s>/predictions/<method>``; a finished training or prediction is
skipped when the command is run again, an interrupted training resumes (``--c``). The
evaluation and the table are recomputed from the predictions every time (seconds), so they
follow the evaluation code in use. The budget is recorded in ``OUT/ablation/budget.json``;
a later call with another budget is refused (it would mix budgets in one table).
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from nnunet_nerve.study import demo
from nnunet_nerve.study.ablation_table import (MetricSpec, markdown_table, method_summaries, per_seed_table,
                                         run_means)
from nnunet_nerve.io.atomic import atomic_file
from nnunet_nerve.errors import NerveError

#: The evaluation's Dice and default HD95 column (``hd95_mm``: the evaluation's HD95 definition).
METRICS = (MetricSpec("dice", "Dice", 3, True), MetricSpec("hd95_mm", "HD95 (mm)", 2, False))
MIN_SEEDS = 2
DEFAULT_SEEDS = 3


@dataclass(frozen=True)
class AblationMethod:
    name: str
    trainer: str
    changes: str


#: In table order; the first is the reference every difference is taken from.
METHODS = (
    AblationMethod("FC-DenseNet", "FCDenseNetTrainer_demo",
                   "nothing: the paper's recipe (cross-entropy; Adam, step schedule; flips, translation, elastic)"),
    AblationMethod("DiceCE", "FCDenseNetTrainer_DiceCE_demo", "loss: nnU-Net's Dice + cross-entropy"),
    AblationMethod("SGDPoly", "FCDenseNetTrainer_SGDPoly_demo",
                   "optimizer: nnU-Net's SGD (momentum 0.99, Nesterov, 1e-2, weight decay 3e-5), poly schedule"),
    AblationMethod("nnUNetDA", "FCDenseNetTrainer_nnUNetDA_demo", "augmentation: nnU-Net's default"),
    AblationMethod("nnUNetRecipe", "FCDenseNetTrainer_nnUNetRecipe_demo",
                   "loss, optimizer and augmentation: FC-DenseNet inside nnU-Net's recipe"),
    AblationMethod("nnU-Net", "nnUNetTrainer_demo",
                   "everything: nnU-Net's default 2D U-Net (deep supervision) and its recipe"),
)
REFERENCE = METHODS[0].name
METHOD_NAMES = tuple(m.name for m in METHODS)


def select_methods(names) -> list:
    """The reference plus the named methods, in table order; NerveError naming an unknown one."""
    names = list(names or METHOD_NAMES)
    unknown = [n for n in names if n not in METHOD_NAMES]
    if unknown:
        raise NerveError(f"--methods: unknown method {unknown[0]!r}; choose from {', '.join(METHOD_NAMES)}")
    return [m for m in METHODS if m.name == REFERENCE or m.name in names]


@dataclass
class AblationLayout:
    """Where the ablation writes, under the demo folder."""
    root: Path

    @property
    def budget(self) -> Path: return self.root / "budget.json"
    @property
    def table(self) -> Path: return self.root / "ablation.md"
    @property
    def runs_csv(self) -> Path: return self.root / "runs.csv"
    @property
    def per_case_csv(self) -> Path: return self.root / "per_case.csv"
    @property
    def logs(self) -> Path: return self.root / "logs"

    def seed_dir(self, seed: int) -> Path:
        return self.root / f"seed_{seed}"

    def results(self, seed: int) -> Path:
        return self.seed_dir(seed) / "nnUNet_results"

    def predictions(self, seed: int, method: AblationMethod) -> Path:
        return self.seed_dir(seed) / "predictions" / method.name


def current_budget() -> dict:
    """The demo budget the training runs get (nnunet_nerve.training.demo_budget)."""
    from nnunet_nerve.training.demo_budget import DEMO_BATCH_SIZE, DEMO_PATCH, demo_epochs, demo_iterations

    return {"epochs": demo_epochs(), "iterations": demo_iterations(), "batch_size": DEMO_BATCH_SIZE,
            "patch": list(DEMO_PATCH)}


def check_budget(layout: AblationLayout) -> dict:
    """Record the budget at the first call; NerveError when a later call's budget differs."""
    budget = current_budget()
    if layout.budget.exists():
        earlier = json.loads(layout.budget.read_text())
        if earlier != budget:
            raise NerveError(f"{layout.budget}: the runs here were trained with budget {earlier}, this call asks for "
                             f"{budget}; use the same --epochs/--iterations or a new output folder")
    else:
        with atomic_file(layout.budget) as tmp:
            tmp.write_text(json.dumps(budget, indent=2))
    return budget


def run_ablation(out, seeds: int | None = None, methods=None, volunteers: int | None = None,
                 patients: int | None = None, seed: int = 0, device: str | None = None,
                 epochs: int | None = None, iterations: int | None = None) -> Path:
    """Run (or resume) the ablation in the demo folder ``out``; returns the path of ablation.md.

    ``seeds``: training seeds 0 .. seeds-1 per method (default DEFAULT_SEEDS, at least 2: the
    spread needs two runs); ``methods``: names from METHOD_NAMES (the reference is always trained);
    ``seed``: the phantom registry's and split's seed, as for the demo."""
    seeds = DEFAULT_SEEDS if seeds is None else seeds
    if seeds < MIN_SEEDS:
        raise NerveError(f"--seeds {seeds}: the run-to-run spread needs at least {MIN_SEEDS} seeds")
    chosen = select_methods(methods)
    layout, env = demo.open_demo_folder(out, False, epochs, iterations)
    ab = AblationLayout(layout.out / "ablation")
    ab.root.mkdir(exist_ok=True)
    budget = check_budget(ab)
    device = device or "cpu"
    runs = [(s, m) for s in range(seeds) for m in chosen]
    progress = demo.Progress(total_stages=3 + 2 * len(runs) + 1)
    started = time.time()
    demo.prepare_dataset(layout, progress, env, volunteers, patients, seed)
    heldout = demo.heldout_cases(layout)
    demo.link_heldout_images(layout, heldout)

    for s, method in runs:
        run_env = dict(env, nnUNet_results=str(ab.results(s)), NNUNET_NERVE_SEED=str(s))
        final = ab.results(s) / layout.dataset.name / f"{method.trainer}__nnUNetPlans__2d" / f"fold_{demo.FOLD}" \
            / "checkpoint_final.pth"
        progress.stage(f"nnUNetv2_train {demo.DATASET_ID} 2d {demo.FOLD} -tr {method.trainer} (seed {s})",
                       final.exists())
        if not final.exists():
            demo.train_fold(method.trainer, device, run_env, progress, ab.logs / f"train_{method.trainer}_seed{s}.log")
        target = ab.predictions(s, method)
        progress.stage(f"nnUNetv2_predict held-out fold {demo.FOLD} ({len(heldout)} cases) with {method.trainer} "
                       f"(seed {s})", target.exists())
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            demo.predict_heldout(layout, method.trainer, target, device, run_env,
                                 ab.logs / f"predict_{method.trainer}_seed{s}.log")

    progress.stage(f"evaluate {len(runs)} runs on the held-out cases, write {ab.table.name}", False)
    per_case, run_rows = evaluate_runs(layout, ab, heldout, runs)
    write_outputs(ab, chosen, seeds, heldout, budget, per_case, run_rows)
    print(f"\nDone in {(time.time() - started) / 60:.1f} min: {ab.table}")
    return ab.table


def evaluate_runs(layout, ab: AblationLayout, heldout: list, runs: list) -> tuple[list, list]:
    """Auto-GT rows per held-out case of every run (the evaluation library's rows, tagged with
    method, trainer and seed) and each run's means (``ablation_table.run_means``)."""
    from nnunet_nerve.registry.dataset_info import load_dataset_info
    from nnunet_nerve.evaluation.evaluator import AUTO_GT, evaluate, gather_prediction_folder

    info = load_dataset_info(layout.dataset)
    # the held-out cases only, against the consensus only (no rater comparisons: not needed here)
    heldout_info = dataclasses.replace(info, cases=tuple(heldout), raters=())
    per_case, run_rows = [], []
    for s, method in runs:
        predictions = gather_prediction_folder(ab.predictions(s, method), heldout_info, method.name)
        rows = [r for r in evaluate(heldout_info, [predictions]).rows if r["comparison"] == AUTO_GT]
        per_case += [{"seed": s, "trainer": method.trainer, **r} for r in rows]
        run_rows.append({"method": method.name, "trainer": method.trainer, "seed": s,
                         **run_means(rows, METRICS)})
    return per_case, run_rows


def write_outputs(ab: AblationLayout, chosen: list, seeds: int, heldout: list, budget: dict,
                  per_case: list, run_rows: list) -> None:
    """per_case.csv, runs.csv and ablation.md (each written atomically, replacing an earlier one)."""
    from nnunet_nerve.evaluation.report import PER_CASE_COLUMNS
    from nnunet_nerve.io.tables import write_csv

    names = [m.name for m in chosen]
    summaries = method_summaries(run_rows, names, REFERENCE, METRICS)
    trainers = {m.name: (m.trainer, m.changes) for m in chosen}
    with atomic_file(ab.per_case_csv, overwrite=True) as tmp:
        write_csv(tmp, ("seed", "trainer") + tuple(PER_CASE_COLUMNS), per_case)
    run_columns = ("method", "trainer", "seed", "n_cases") + tuple(
        f"{m.key}_{what}" for m in METRICS for what in ("mean", "n_inf"))
    with atomic_file(ab.runs_csv, overwrite=True) as tmp:
        write_csv(tmp, run_columns, run_rows)
    lines = [
        "# Ablation: the paper's recipe, one part of nnU-Net's recipe at a time, and nnU-Net",
        "",
        "> Data: the demo's **synthetic** registry; training: the DEMO-SIZED budget "
        f"({budget['epochs']} epochs x {budget['iterations']} iterations, batches of {budget['batch_size']} patches of "
        f"{budget['patch'][0]} x {budget['patch'][1]} pixels, the same for every method). It shows how the recipe "
        "parts move the result at this budget on this data, not on real scans or the full schedule.",
        "",
        f"Held-out fold {demo.FOLD} ({len(heldout)} cases: {', '.join(heldout)}), predicted with `nnUNetv2_predict` "
        "(no test-time mirroring) and evaluated against the consensus (Auto-GT) with `nnunet_nerve.evaluation.evaluator`. "
        f"Seeds {', '.join(str(s) for s in range(seeds))} (`NNUNET_NERVE_SEED`: initial weights, batches, "
        "augmentation).",
        "",
        "Each value: the mean over seeds of a run's mean over the held-out cases, ± the run-to-run spread (sample SD "
        "over seeds of those per-run means). Δ: the difference from the paper's recipe (FC-DenseNet); it counts as "
        "beyond the spread (bold, with better/worse) only when |Δ| > SD(method) + SD(FC-DenseNet), i.e. when the two "
        "mean ± SD intervals do not overlap. Higher Dice and lower HD95 are better. An empty prediction has no HD95; "
        "it is left out of that run's mean and counted in the cell.",
        "",
        *markdown_table(summaries, REFERENCE, METRICS, lambda name: trainers[name]),
        "",
        "## Per run",
        "",
        *per_seed_table(run_rows, names, METRICS),
        "",
        f"Per case: `{ab.per_case_csv.name}`; per run: `{ab.runs_csv.name}`; logs: `{ab.logs.name}/`; models: "
        "`seed_<s>/nnUNet_results/`.",
        "",
    ]
    with atomic_file(ab.table, overwrite=True) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
