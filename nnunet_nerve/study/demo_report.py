"""report.md of `nnunet-nerve demo`: the tables and figures of the run, with relative links.

Figure 3 (as in the paper): the T2 image of one held-out case on three slices spread over the
nerve, with the consensus (green) and each method's segmentation (one colour each) as contours.

Post-processing: Dice and HD95 of each method against the consensus on the held-out cases,
before and after ``nnunet-nerve postprocess``, computed by ``evaluation.case_comparisons``
(the evaluation's own metric columns, so the HD95 is the one Table 1 reports).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_nerve.io.atomic import atomic_file
from nnunet_nerve.biomarkers.agreement import AGREEMENT_FOLDER
from nnunet_nerve.segmentation.report import three_nerve_slices
from nnunet_nerve.registry.dataset_info import FILE_ENDING, IMAGES_TR, LABELS_TR, image_file_name

METHOD_COLOURS = ("#e8463a", "#3a8ee8", "#f0c419", "#b04ae8")


def plot_figure3(path: Path, image: np.ndarray, consensus: np.ndarray, predictions: dict[str, np.ndarray],
                 case: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    slices = three_nerve_slices(consensus)
    fig, axes = plt.subplots(1, len(slices), figsize=(4.2 * len(slices), 4.4), squeeze=False)
    for ax, z in zip(axes[0], slices):
        ax.imshow(image[z], cmap="gray", interpolation="nearest")
        if consensus[z].any():
            ax.contour(consensus[z], levels=[0.5], colors="#2ecc40", linewidths=1.2)
        for colour, pred in zip(METHOD_COLOURS, predictions.values()):
            if pred[z].any():
                ax.contour(pred[z], levels=[0.5], colors=colour, linewidths=0.9)
        ax.set_title(f"{case}, slice {z}")
        ax.axis("off")
    handles = [Line2D([], [], color="#2ecc40", label="consensus (GT)")]
    handles += [Line2D([], [], color=c, label=n) for c, n in zip(METHOD_COLOURS, predictions)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    with atomic_file(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def postprocessing_effect(layout, heldout: list[str]) -> list[dict]:
    """Per method and metric (Dice, HD95): mean and SD over the held-out cases before and after
    post-processing, and in how many cases post-processing improved it."""
    from nnunet_nerve.evaluation.evaluator import AUTO_GT, case_comparisons
    from nnunet_nerve.io.images import read_image, spacing_zyx

    values = {}
    for case in heldout:
        label = read_image(layout.dataset / LABELS_TR / f"{case}{FILE_ENDING}")
        consensus = sitk.GetArrayFromImage(label) > 0
        for name in layout.methods:
            for when, folder in (("before", layout.predictions), ("after", layout.postprocessed)):
                path = folder / name / f"{case}.nii.gz"
                if not path.is_file():
                    continue
                pred = sitk.GetArrayFromImage(read_image(path)) > 0
                row = next(r for r in case_comparisons(consensus, {}, {name: pred}, spacing_zyx(label))
                           if r["comparison"] == AUTO_GT)
                values.setdefault((name, when), []).append(row)
    out = []
    for name in layout.methods:
        before, after = values.get((name, "before"), []), values.get((name, "after"), [])
        for key, label, higher_is_better in (("dice", "Dice", True), ("hd95_mm", "HD95 (mm)", False)):
            b = np.array([r[key] for r in before], dtype=float)
            a = np.array([r[key] for r in after], dtype=float)
            better = int(np.sum(a > b) if higher_is_better else np.sum(a < b)) if a.size == b.size else 0
            out.append({"method": name, "metric": label, "n": int(b.size), "before": _mean_sd(b),
                        "after": _mean_sd(a), "improved": better})
    return out


def _mean_sd(values: np.ndarray) -> str:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return "n/a"
    text = f"{finite.mean():.3g} ± {finite.std():.2g}"
    return text + (f" ({values.size - finite.size} inf)" if finite.size < values.size else "")


def _biomarker_lines(summary: dict) -> list[str]:
    """What the biomarker summary says about the mask, the branches and the lesion references."""
    lines = [f"- mask measured: **{summary.get('mask_used')}**"]
    pp = summary.get("postprocessing")
    if pp:
        removed = _removed_summary(pp["removed"]) if pp["removed"] else "nothing"
        lines.append(f"- post-processing removed {removed} (each with its slices and reason: "
                     f"`postprocessing.removed` in summary.json); filled slices: "
                     f"{', '.join(map(str, pp['filled_slices'])) or 'none'}")
    split = summary["split"]
    if split["found"]:
        trunk = f"trunk at the {split['trunk']}" if split["trunk"] else "no trunk in the stack: divided on every slice"
        lines.append(f"- branches named once for the stack by {split['naming']} ({trunk}); "
                     + "; ".join(f"{name}: slices {b['first_slice']}-{b['last_slice']}"
                                 + "".join(f", {e['event']} ({e.get('first_slice', e.get('last_slice'))})"
                                           for e in b.get("events", []))
                                 for name, b in summary["branches"].items() if name in ("tibial", "peroneal")))
    lesion = summary["lesion"]
    refs = "; ".join(f"{region}: {r['label']}, CSA threshold {r['csa_threshold_mm2']:.1f} mm²"
                     for region, r in lesion["references"].items() if region != "merged")
    lines.append(f"- lesion references (each part against the same part): {refs or 'none'}")
    return lines


#: The section of evaluate's report that the demo fills from its own measurement.
PREDICTION_TIME_HEADING = "## Prediction time per scan"


def prediction_time_lines(layout) -> list[str]:
    """One line per method: the wall clock of the demo's nnUNetv2_predict run over the held-out
    scans (``demo.record_prediction_time``), and per scan; "not recorded" for a run that an
    older demo made."""
    import json

    path = layout.prediction_times
    times = json.loads(path.read_text()) if path.is_file() else {}
    lines = []
    for name, trainer in layout.methods.items():
        t = times.get(trainer)
        lines.append(f"- {name}: not recorded (predicted by an earlier demo run)" if t is None else
                     f"- {name}: {t['cases']} scans in {t['seconds']:.1f} s of `nnUNetv2_predict` on the {t['device']}, "
                     f"{t['seconds'] / t['cases']:.1f} s per scan including the command's start and the model's "
                     "loading (an upper bound; `benchmarks/bench_predict.py` separates the start-up from the time per "
                     "slice on a paper-size scan)")
    return lines


def with_prediction_times(table: str, lines: list[str]) -> str:
    """``table`` (evaluate's report) with its prediction-time section's body replaced by
    ``lines``: evaluate of prediction folders has no time to show, the demo timed them."""
    head, found, rest = table.partition(PREDICTION_TIME_HEADING)
    if not found:
        return table
    _, heading, after = rest.partition("\n## ")
    return head + PREDICTION_TIME_HEADING + "\n\n" + "\n".join(lines) + ("\n\n## " + after if heading else "\n")


def training_seed_line(layout) -> str:
    """How each method's training drew its random numbers, from its fold's training logs (the
    line ``SeededTraining`` writes): "seed S" per method, "resumed" when the fold has more
    than one log (a resumed run starts its generators from the seed again, so it is not the
    uninterrupted run), "unseeded" without the line."""
    import re

    parts = []
    for name, trainer in layout.methods.items():
        logs = sorted(layout.fold_dir(trainer).glob("training_log_*.txt"))
        seeds = sorted({m.group(1) for log in logs
                        for m in re.finditer(r"seed (\d+) \(from NNUNET_NERVE_SEED\)", log.read_text(errors="replace"))})
        what = f"seed {', '.join(seeds)}" if seeds else "unseeded (nnU-Net's default)"
        parts.append(f"{name} {what}" + (f", resumed {len(logs) - 1} time(s)" if len(logs) > 1 else ""))
    return ("- training: " + "; ".join(parts) + " (`NNUNET_NERVE_SEED`: initial weights, batches, augmentation; "
            "on the CPU the same seed repeats an uninterrupted run, a resumed one draws anew from the seed)")


def _removed_summary(removed: list) -> str:
    """What post-processing removed, by ``kind``: "N group(s), V voxels: n short (v voxels), ..."."""
    kinds: dict = {}
    for r in removed:
        count, voxels = kinds.get(r["kind"], (0, 0))
        kinds[r["kind"]] = (count + 1, voxels + r["voxels"])
    parts = ", ".join(f"{count} {kind} ({voxels} voxels)" for kind, (count, voxels) in kinds.items())
    return f"{len(removed)} group(s), {sum(r['voxels'] for r in removed)} voxels: {parts}"


def write_report(layout, heldout: list[str], case: str) -> Path:
    """Write ``layout.report`` (report.md) and its Figure 3; returns the report's path."""
    from nnunet_nerve.io.images import read_image
    from nnunet_nerve.training.demo_budget import DEMO_BATCH_SIZE, DEMO_PATCH, demo_epochs, demo_iterations

    out = layout.out
    read = lambda p: sitk.GetArrayFromImage(read_image(p))  # noqa: E731
    image = read(layout.dataset / IMAGES_TR / image_file_name(case))
    consensus = read(layout.dataset / LABELS_TR / f"{case}{FILE_ENDING}") > 0
    preds = {name: read(layout.predictions / name / f"{case}.nii.gz") > 0 for name in layout.methods}
    figure3 = out / "figures" / "figure3_contours.png"
    plot_figure3(figure3, image, consensus, preds, case)

    table1 = (layout.evaluation / "table1.md").read_text()
    agreement = layout.evaluation / AGREEMENT_FOLDER / "agreement.md"
    summary = json.loads((layout.biomarkers / "summary.json").read_text())
    schedule = ("the paper's full schedule (FC-DenseNet 100 epochs; nnU-Net its default 1000 epochs)" if layout.full
                else f"a DEMO-SIZED schedule: {demo_epochs()} epochs x {demo_iterations()} iterations, batches of "
                     f"{DEMO_BATCH_SIZE} patches of {DEMO_PATCH[0]} x {DEMO_PATCH[1]} pixels, the same for both networks "
                     "(the paper trains 100 epochs of full passes over the training slices)")
    lines = [
        "# nnunet-nerve demo report",
        "",
        "> Data: the embedded **synthetic** registry (`nnunet-nerve phantom`). It exercises the pipeline; it is no "
        "evidence of accuracy on real MR neurography.",
        f"> Training: {schedule}.",
        "",
        "## What ran",
        "",
        f"- registry: `{layout.registry.relative_to(out)}` converted to `{layout.dataset.relative_to(out)}` "
        "with the fixed four-fold split (cohort-stratified)",
        "- trained on fold 0 with nnU-Net's own `nnUNetv2_train`: "
        + ", ".join(f"{n} (`-tr {t}`)" for n, t in layout.methods.items()),
        f"- held-out fold 0 ({len(heldout)} cases: {', '.join(heldout)}) predicted with `nnUNetv2_predict`; "
        "without test-time mirroring for either method, as in the paper; "
        "the training cases are not evaluated (listed as left out in the table)",
        training_seed_line(layout),
        f"- logs of every command: `{layout.logs.relative_to(out)}/`",
        "",
        "## Table 1: Auto-GT, rater comparisons and statistics",
        "",
        with_prediction_times(table1, prediction_time_lines(layout)).strip(),
        "",
        "## Figure 2: boxplots",
        "",
        f"![boxplots]({(layout.evaluation / 'figure2.png').relative_to(out)})",
        "",
        f"## Figure 3: segmentations of {case}",
        "",
        f"![contours]({figure3.relative_to(out)})",
        "",
        "## Post-processing: Dice and HD95 against the consensus before and after `nnunet-nerve postprocess`",
        "",
        f"Held-out cases; mean ± SD; \"improved\": cases where post-processing made the metric better. "
        f"Post-processed masks: `{layout.postprocessed.relative_to(out)}/`.",
        "",
        "| method | metric | n | before | after | improved |",
        "|---|---|---|---|---|---|",
        *[f"| {r['method']} | {r['metric']} | {r['n']} | {r['before']} | {r['after']} | {r['improved']} of {r['n']} |"
          for r in postprocessing_effect(layout, heldout)],
        "",
        "## Biomarker agreement with the consensus, beside the raters'",
        "",
        "Per held-out case: nerve volume and mean obliquity-corrected CSA of each method's post-processed "
        "segmentation and of each rater's mask against the consensus (Bland-Altman: bias and 95 % limits of "
        "agreement). A method whose limits lie within the raters' spread measures like a rater.",
        "",
        *(agreement.read_text().strip().splitlines() if agreement.is_file() else ["(not computed)"]),
        "",
        f"![Bland-Altman]({(agreement.parent / 'bland_altman.png').relative_to(out)})",
        "",
        f"## Biomarkers of {case} (FC-DenseNet segmentation, post-processed)",
        "",
        *_biomarker_lines(summary),
        "",
        "| biomarker | value |",
        "|---|---|",
    ]
    for key, value in summary.items():
        if isinstance(value, (int, float, str, bool)) or value is None:
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"| {key} | {shown} |")
    for png in ("profile.png", "mip.png"):
        if (layout.biomarkers / png).exists():
            lines += ["", f"![{png}]({(layout.biomarkers / png).relative_to(out)})"]
    lines += ["", "Per-slice values: " f"`{(layout.biomarkers / 'slices.csv').relative_to(out)}`.", ""]
    with atomic_file(layout.report, overwrite=True) as tmp:
        tmp.write_text("\n".join(lines))
    return layout.report
