"""The `demo` verb: the whole study on the embedded synthetic registry."""
from __future__ import annotations

from nnunet_nerve import api
from nnunet_nerve.app.commands import call, default


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "demo", help="run the whole study on a synthetic registry and write OUT/report.md",
        description="Generate a phantom registry, convert it, run nnUNetv2_plan_and_preprocess, train FC-DenseNet "
                    "and nnU-Net's default U-Net on fold 0 with nnUNetv2_train (a demo-sized schedule), predict the "
                    "held-out fold with nnUNetv2_predict, evaluate both (Table 1 side by side), compute biomarkers of "
                    "one patient and write OUT/report.md. Stages whose outputs exist are skipped: run it again to "
                    "continue an interrupted demo. Its time on a CPU: docs/demo.md.")
    p.add_argument("out", help="output folder (new, empty, or an earlier demo's folder to continue)")
    p.add_argument("--full", action="store_true",
                   help="the paper's registry size (10 volunteers, 42 patients, paper-size scans) and full "
                        "schedules (FCDenseNetTrainer, nnUNetTrainer): for a GPU")
    p.add_argument("--volunteers", type=int, help="phantom volunteers (default 8, or 10 with --full)")
    p.add_argument("--patients", type=int, help="phantom patients (default 8, or 42 with --full)")
    p.add_argument("--seed", type=int, default=default(api.demo, "seed"),
                   help="phantom and split seed (default %(default)s)")
    p.add_argument("--device", choices=("cpu", "cuda", "mps"), help="training device (default cpu; cuda with --full)")
    p.add_argument("--epochs", type=int, help="demo schedule: epochs for both networks (default 12)")
    p.add_argument("--iterations", type=int, help="demo schedule: iterations per epoch for both networks (default 12)")
    ablation = p.add_argument_group(
        "ablation", "--ablation trains, on the same registry, fold and demo budget, the paper's recipe, each "
                    "FCDenseNetTrainer recipe variant and nnU-Net once per seed, and writes OUT/ablation/ablation.md: "
                    "Dice and HD95 on the held-out cases, mean and spread over seeds (docs/ablation.md)")
    ablation.add_argument("--ablation", action="store_true",
                          help="run the ablation instead of the demo's report (stages 1-3 are shared with the demo)")
    ablation.add_argument("--seeds", type=int, metavar="N",
                          help="training seeds 0..N-1 per method (default 3, at least 2)")
    ablation.add_argument("--methods", nargs="+", metavar="NAME",
                          help="methods besides the paper's recipe (FC-DenseNet, always trained): any of DiceCE, "
                               "SGDPoly, nnUNetDA, nnUNetRecipe, nnU-Net (default: all)")
    p.set_defaults(func=_demo)


def _demo(args) -> int:
    call(api.demo, args)
    return 0
