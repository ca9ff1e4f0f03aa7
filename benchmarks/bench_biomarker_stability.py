"""Are the biomarkers stable under the errors a segmentation network makes, and do they find
the lesions that are there?

    .venv/bin/python benchmarks/bench_biomarker_stability.py [--volunteers 10] [--patients 42]
        [--seed 0] [--variants 2] [--size small] [--max-gap N] [--k K] [--min-excess F]
        [--min-lesion-slices N] [--lesion-extent half-maximum|threshold] [--min-lesion-separation N]
        [--seeds FIRST-LAST] [--errors jitter,missed-branch,missed-slice,veins] [--json FILE]
    .venv/bin/python benchmarks/bench_biomarker_stability.py --compare FIRST.json SECOND.json

``--seeds 0-9`` runs every seed and prints one row of the goals' figures per seed and their
totals (the table of docs/biomarkers.md) instead of one seed's report. ``--errors`` adds only
the errors named (each is drawn all the same, so a mask is the full one less the others), and
``--compare`` counts, mask by mask, where two such runs' patient masks miss "same segments":
which misses one kind of error makes on its own.

The synthetic registry (``nnunet_nerve.registry.phantom``, rendered in memory; the paper's 10
volunteers and 42 patients by default): each subject's consensus mask (the raters'
majority vote) is the reference measurement. ``--variants`` noisy masks per subject add
the errors a 2D network makes (``tests/nerve_tubes.py``), all of them at once:

* one-pixel boundary jitter: every boundary pixel of the nerve removed with probability
  0.3, and pixels just outside it added with the probability that keeps the expected area;
* two vein-like blobs away from the nerve: straight tubes of 3-6 slices, radius 2-3.5 mm,
  their axis 12-35 mm from the nerve's centroid, at least 3 mm from every nerve voxel and
  15 mm from each other;
* a missed slice: one nerve slice (not the first or last) emptied;
* a missed small branch (stacks that split): the smaller branch gone on one split slice
  (``--missed-branch-slices``: on that many consecutive ones), as the registry's raters
  miss it.

Every mask is measured as ``nnunet-nerve biomarkers`` measures it (post-processed by
default, ``--max-gap`` as in ``postprocess --max-gap``, the slices it interpolated marked as
such; ``raw`` rows with ``--no-postprocess``; the lesion rule's options as in ``biomarkers``),
with the imaged leg known (the phantom is
a right leg). Lesions are judged against the subject's own nerve (``own``) and against the
volunteers' consensus masks of the same thigh location (``normative``; each volunteer
against the others, leave-one-out).

Goals (issue 15), per noisy mask against its consensus: the median over nerve slices of
|CSA - consensus CSA| / consensus CSA (obliquity-corrected, over the consensus's nerve
slices) at most 10 %, reported pooled over all slices and per mask; nerve volume within
5 %; the same lesion segments (as many, each first and last slice within one slice) in
every patient; no lesion in any volunteer. Lesions against the truth
(participants.tsv's ``lesion_first_slice`` / ``lesion_last_slice``, the swelling's full width
at half maximum): a true lesion is found when a segment overlaps it, and its ends are
right (``focal ends +-1``) when that segment's first and last slice are within one slice of
the truth's; false lesions are segments in volunteers. A patient mask missing "same
segments" whose segment still has both ends within one slice of the truth is counted apart
(``own misses with focal ends +-1``): the consensus, the goal's reference, is a measurement
too, off the truth at some lesions.

The raters (``raters`` row and columns): each of the registry's three rater masks per subject,
post-processed and measured against the consensus (their majority vote, itself among them) as
a noisy mask is; the spread of human segmentations, beside which the goals' figures read.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import nerve_tubes  # noqa: E402  (the network-like errors, shared with the tests)

from nnunet_nerve.biomarkers.measures import LesionRule, NormativeReference, lateral_vector, nerve_biomarkers  # noqa: E402
from nnunet_nerve.registry.consensus import majority_vote  # noqa: E402
from nnunet_nerve.registry.phantom import render_subject  # noqa: E402
from nnunet_nerve.registry.phantom_anatomy import SIZES, lesion_extent, phantom_subjects  # noqa: E402
from nnunet_nerve.biomarkers.lesions import EXTENTS  # noqa: E402
from nnunet_nerve.biomarkers.postprocess import PostprocessRule, postprocess_nerve  # noqa: E402

#: The phantom's stacks are right legs in an identity grid: lateral is -x.
LATERAL = lateral_vector((1, 0, 0, 0, 1, 0, 0, 0, 1), "right")
MODES = ("post-processed", "raw")
GOALS = {"csa": 0.10, "volume": 0.05}


#: The network-like errors, by their ``--errors`` names.
ERRORS = ("jitter", "missed-branch", "missed-slice", "veins")


def noisy_mask(consensus: np.ndarray, spacing, rng: np.random.Generator, branch_slices: int = 1,
               errors: tuple = ERRORS) -> tuple[np.ndarray, list]:
    """The consensus with every error of the module docstring; (mask, errors applied).

    ``errors`` (a subset of ``ERRORS``) keeps only those: every error is still drawn, in the
    same order and from the same generator, and those not named are left out, so a mask with
    some errors is the mask with all of them less the others (the same jitter, the same missed
    slice, the same blobs at the same place)."""
    if unknown := set(errors) - set(ERRORS):
        raise ValueError(f"unknown error(s) {sorted(unknown)}: expected some of {ERRORS}")
    jittered = nerve_tubes.jitter_boundary(consensus, rng)
    mask, applied = (jittered, ["boundary jitter"]) if "jitter" in errors else (consensus.copy(), [])
    nerve_z = np.flatnonzero(consensus.reshape(consensus.shape[0], -1).any(axis=1))
    split = nerve_tubes.split_slices(consensus)
    starts = [z for z in split if all(z + i in split for i in range(branch_slices))]
    full = jittered
    if starts:
        first = int(rng.choice(starts))
        full = nerve_tubes.drop_small_branch(full, first, first + branch_slices - 1)
        if "missed-branch" in errors:
            mask = nerve_tubes.drop_small_branch(mask, first, first + branch_slices - 1)
            applied.append(f"missed small branch {first}-{first + branch_slices - 1}")
    missed = int(rng.choice(nerve_z[1:-1]))
    full = nerve_tubes.drop_slices(full, missed, missed)
    if "missed-slice" in errors:
        mask = nerve_tubes.drop_slices(mask, missed, missed)
        applied.append(f"missed slice {missed}")
    with_blobs, blobs = nerve_tubes.add_vein_blobs(full, spacing, rng, count=2)
    if "veins" in errors:
        mask = mask | (with_blobs & ~full)  # blob voxels: placed against the mask with every error
        applied += [f"vein blob {a}-{b}" for a, b in blobs]
    return mask, applied


def measure(mask, spacing, image, mode: str, reference=None, location=None, rule: PostprocessRule = PostprocessRule(),
            lesion_rule: LesionRule = LesionRule()):
    interpolated = ()
    if mode == "post-processed":
        pp = postprocess_nerve(mask, spacing, rule)
        mask, interpolated = pp.mask, pp.filled_slices
    return nerve_biomarkers(mask, spacing, image, lateral_xy=LATERAL, reference=reference, location=location,
                            interpolated=interpolated, rule=lesion_rule)


def render(volunteers: int, patients: int, seed: int, size: str) -> list:
    grid = SIZES[size]
    spacing = tuple(reversed(grid.spacing_xyz))
    out = []
    for i, s in enumerate(phantom_subjects(volunteers, patients, grid, seed)):
        image, masks, _ = render_subject(s, grid, seed, i)
        out.append({"id": s.participant_id, "cohort": s.cohort, "location": s.location, "lesion": s.lesion,
                    "truth": lesion_extent(s, grid), "image": image, "spacing": spacing,
                    "consensus": majority_vote(list(masks.values())).astype(bool),
                    "raters": {r: m.astype(bool) for r, m in masks.items()}})
    return out


def normative_references(subjects: list, lesion_rule: LesionRule = LesionRule()) -> dict:
    """Per subject: the volunteers' reference (leave-one-out for a volunteer)."""
    volunteers = {s["id"]: measure(s["consensus"], s["spacing"], s["image"], "raw", lesion_rule=lesion_rule)
                  for s in subjects if s["cohort"] == "volunteer"}
    locations = {s["id"]: s["location"] for s in subjects}
    out = {}
    for s in subjects:
        others = {c: r for c, r in volunteers.items() if c != s["id"]}
        out[s["id"]] = NormativeReference.from_results("phantom volunteers", others, locations)
    return out


def segments(result) -> list:
    return [(g["first_slice"], g["last_slice"]) for g in result.summary["lesion"]["segments"]]


def same_segments(a: list, b: list) -> bool:
    return len(a) == len(b) and all(abs(x[0] - y[0]) <= 1 and abs(x[1] - y[1]) <= 1 for x, y in zip(a, b))


def csa_errors(result, consensus) -> list:
    """|CSA - consensus CSA| / consensus CSA over the consensus's nerve slices."""
    return [abs(r["csa_corrected_mm2"] - c["csa_corrected_mm2"]) / c["csa_corrected_mm2"]
            for r, c in zip(result.slices, consensus.slices) if c["voxels"] > 0]


def mask_errors(result, consensus) -> dict:
    """A mask's CSA errors against its consensus (``csa_errors``, their median ``csa_error``) and
    its volume error |volume - consensus volume| / consensus volume."""
    errors = csa_errors(result, consensus)
    return {"csa_error": float(np.median(errors)), "csa_errors": errors,
            "volume_error": abs(result.summary["volume_mm3"] - consensus.summary["volume_mm3"])
            / consensus.summary["volume_mm3"]}


def found(truth, found_segments: list) -> bool:
    return any(a <= truth[1] and b >= truth[0] for a, b in found_segments)


def within_one(truth, found_segments: list) -> bool:
    """A segment overlapping the true lesion has its first and last slice within one slice of the truth's."""
    return any(abs(a - truth[0]) <= 1 and abs(b - truth[1]) <= 1 for a, b in found_segments if found(truth, [(a, b)]))


def run(volunteers: int = 10, patients: int = 42, seed: int = 0, variants: int = 2, size: str = "small",
        branch_slices: int = 1, max_gap: "int | None" = None, lesion_rule: LesionRule = LesionRule(),
        errors: tuple = ERRORS) -> dict:
    started = time.perf_counter()
    subjects = render(volunteers, patients, seed, size)
    references = normative_references(subjects, lesion_rule)
    rng = np.random.default_rng([seed, 15])
    rule = PostprocessRule() if max_gap is None else PostprocessRule(max_gap_slices=max_gap)
    cases = []
    for s in subjects:
        spacing, image, ref = s["spacing"], s["image"], references[s["id"]]
        consensus = {"own": measure(s["consensus"], spacing, image, "post-processed", rule=rule,
                                    lesion_rule=lesion_rule),
                     "normative": measure(s["consensus"], spacing, image, "post-processed", ref, s["location"], rule,
                                          lesion_rule)}
        row = {k: s[k] for k in ("id", "cohort", "location", "lesion", "truth")}
        row["consensus"] = {name: segments(res) for name, res in consensus.items()}
        row["raters"] = []
        for rater, mask in s["raters"].items():
            own = measure(mask, spacing, image, "post-processed", rule=rule, lesion_rule=lesion_rule)
            row["raters"].append({"rater": rater, **mask_errors(own, consensus["own"]),
                                  "segments": {"own": segments(own)}})
        row["variants"] = []
        for _ in range(variants):
            mask, applied = noisy_mask(s["consensus"], spacing, rng, branch_slices, errors)
            variant = {"errors": applied}
            for mode in MODES:
                own = measure(mask, spacing, image, mode, rule=rule, lesion_rule=lesion_rule)
                normative = measure(mask, spacing, image, mode, ref, s["location"], rule, lesion_rule)
                variant[mode] = {
                    **mask_errors(own, consensus["own"]),
                    "segments": {"own": segments(own), "normative": segments(normative)},
                    "references": {"own": own.summary["lesion"]["reference"]["kind"],
                                   "normative": normative.summary["lesion"]["reference"]["kind"]},
                }
            row["variants"].append(variant)
        cases.append(row)
    return {"cases": cases, "seed": seed, "size": size, "variants": variants, "max_gap": rule.max_gap_slices,
            "errors": list(errors),
            "lesion_rule": lesion_rule.text(), "seconds": time.perf_counter() - started}


def stability(cases: list, mode: str) -> dict:
    """The stability figures of one mode (post-processed or raw) over every noisy mask.
    ``misses_true_ends``: patient masks whose own segments are not their consensus's although
    the mask's segment at a focal lesion has both ends within one slice of the truth (the
    consensus, the goal's reference, is off it, or both are within one slice of the truth and
    two apart)."""
    patients = [(c, v) for c in cases if c["cohort"] == "patient" for v in c["variants"]]
    vols = [(c, v) for c in cases if c["cohort"] == "volunteer" for v in c["variants"]]
    return {"csa": [v[mode]["csa_error"] for c in cases for v in c["variants"]],
            "volume": [v[mode]["volume_error"] for c in cases for v in c["variants"]],
            "pooled_csa_pct": 100 * np.median([e for c in cases for v in c["variants"] for e in v[mode]["csa_errors"]]),
            "same": {ref: sum(same_segments(v[mode]["segments"][ref], c["consensus"][ref]) for c, v in patients)
                     for ref in ("own", "normative")},
            "misses_true_ends": sum(not same_segments(v[mode]["segments"]["own"], c["consensus"]["own"])
                                    and c["lesion"] == "focal" and bool(c["truth"])
                                    and within_one(c["truth"], v[mode]["segments"]["own"]) for c, v in patients),
            "volunteers_with_lesion": {ref: sum(bool(v[mode]["segments"][ref]) for _, v in vols)
                                       for ref in ("own", "normative")},
            "patient_masks": len(patients), "volunteer_masks": len(vols)}


def compare_misses(first: list, second: list) -> dict:
    """Two ``--seeds`` runs of the same seeds (their ``--json`` lists), mask by mask: how many
    post-processed patient masks miss "same segments" (own reference) in both, in the first only,
    in the second only, in neither. With ``--errors`` the runs draw the same errors, so this says
    which misses one set of errors makes on its own."""
    if [r["seed"] for r in first] != [r["seed"] for r in second]:
        raise ValueError("the two runs cover different seeds")
    counts = {"both": 0, "first only": 0, "second only": 0, "neither": 0}
    for a, b in zip(first, second):
        if [c["id"] for c in a["cases"]] != [c["id"] for c in b["cases"]] or \
                [len(c["variants"]) for c in a["cases"]] != [len(c["variants"]) for c in b["cases"]]:
            raise ValueError(f"seed {a['seed']}: the runs hold different subjects or numbers of noisy masks")
        for ca, cb in zip(a["cases"], b["cases"]):
            if ca["cohort"] != "patient":
                continue
            for va, vb in zip(ca["variants"], cb["variants"]):
                miss = [not same_segments([tuple(g) for g in v["post-processed"]["segments"]["own"]],
                                          [tuple(g) for g in c["consensus"]["own"]])
                        for c, v in ((ca, va), (cb, vb))]
                key = {(True, True): "both", (True, False): "first only", (False, True): "second only",
                       (False, False): "neither"}[tuple(miss)]
                counts[key] += 1
    return counts


def rater_figures(cases: list) -> dict:
    """The goals' figures for the registry's rater masks, each post-processed and measured against
    the consensus of the raters (itself among them) as a noisy mask is: the spread of human
    segmentations, beside which the noisy masks' figures read."""
    patients = [(c, r) for c in cases if c["cohort"] == "patient" for r in c.get("raters", [])]
    masks = [r for c in cases for r in c.get("raters", [])]
    return {"csa": [r["csa_error"] for r in masks], "volume": [r["volume_error"] for r in masks],
            "pooled_csa_pct": 100 * np.median([e for r in masks for e in r["csa_errors"]]) if masks else 0.0,
            "same_own": sum(same_segments(r["segments"]["own"], c["consensus"]["own"]) for c, r in patients),
            "patient_masks": len(patients),
            "volunteers_with_lesion": sum(bool(r["segments"]["own"]) for c in cases if c["cohort"] == "volunteer"
                                          for r in c.get("raters", [])),
            "volunteer_masks": len(masks) - len(patients)}


def truth_figures(cases: list, source: str, ref: str) -> dict:
    """Per mask of ``source`` (consensus or a mode) against reference ``ref``: focal and extended
    lesions found, focal ends within one slice, volunteers' segments, segments off the lesion."""
    def segs(c):
        return [c["consensus"][ref]] if source == "consensus" else [v[source]["segments"][ref] for v in c["variants"]]
    out = {kind: [found(c["truth"], s) for c in cases if c["lesion"] == kind and c["truth"] for s in segs(c)]
           for kind in ("focal", "extended")}
    out["ends"] = [within_one(c["truth"], s) for c in cases if c["lesion"] == "focal" and c["truth"] for s in segs(c)]
    out["volunteer_segments"] = [len(s) for c in cases if c["cohort"] == "volunteer" for s in segs(c)]
    out["off"] = [sum(not found(c["truth"], [g]) for g in s) for c in cases if c["cohort"] == "patient" and c["truth"]
                  for s in segs(c)]
    return out


def seeds_table(results: list) -> str:
    """One markdown row per seed's result (post-processed masks, own reference unless named) and a
    row of totals: the table of docs/biomarkers.md, "Against the goals"."""
    head = ("| seed | CSA pooled median (worst mask) | volume <= 5 % (worst) | same segments own / norm | "
            "volunteer masks with a lesion own / norm | focal found | focal ends +-1 | consensus ends +-1 | "
            "own misses with focal ends +-1 | raters: volume <= 5 % | raters: same segments own | "
            "raters: volunteer masks with a lesion own |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|")
    def cells(n) -> str:
        return (f"{n['vol_ok']} of {n['masks']}{n['vol_worst']} | {n['same_own']} / {n['same_norm']} of "
                f"{n['patients']} | {n['vol_lesion_own']} / {n['vol_lesion_norm']} | {n['found']} of {n['focal']} | "
                f"{n['ends']} of {n['focal']} | {n['cons_ends']} of {n['cons_focal']} | "
                f"{n['true_ends']} of {n['patients'] - n['same_own']} | {n['r_vol_ok']} of {n['r_masks']} | "
                f"{n['r_same']} of {n['r_patients']} | {n['r_vol_lesion']} of {n['r_volunteers']} |")

    rows, total = [head], {}
    for r in results:
        st, noisy = stability(r["cases"], "post-processed"), truth_figures(r["cases"], "post-processed", "own")
        cons, raters = truth_figures(r["cases"], "consensus", "own"), rater_figures(r["cases"])
        counts = {"vol_ok": sum(e <= GOALS["volume"] for e in st["volume"]), "masks": len(st["volume"]),
                  "same_own": st["same"]["own"], "same_norm": st["same"]["normative"],
                  "patients": st["patient_masks"], "vol_lesion_own": st["volunteers_with_lesion"]["own"],
                  "vol_lesion_norm": st["volunteers_with_lesion"]["normative"], "found": sum(noisy["focal"]),
                  "focal": len(noisy["focal"]), "ends": sum(noisy["ends"]), "cons_ends": sum(cons["ends"]),
                  "cons_focal": len(cons["ends"]), "true_ends": st["misses_true_ends"],
                  "r_vol_ok": sum(e <= GOALS["volume"] for e in raters["volume"]), "r_masks": len(raters["volume"]),
                  "r_same": raters["same_own"], "r_patients": raters["patient_masks"],
                  "r_vol_lesion": raters["volunteers_with_lesion"], "r_volunteers": raters["volunteer_masks"]}
        total = {k: total.get(k, 0) + v for k, v in counts.items()}
        rows.append(f"| {r['seed']} | {st['pooled_csa_pct']:.1f} % ({100 * max(st['csa']):.1f} %) | "
                    + cells({**counts, "vol_worst": f" ({100 * max(st['volume']):.1f} %)"}))
    rows.append("| all | | " + cells({**total, "vol_worst": ""}))
    return "\n".join(rows)


def errors_text(errors) -> str:
    """The ``errors`` of a run as its report's line: all of them, or which ones."""
    return "all (" + ", ".join(ERRORS) + ")" if set(errors) == set(ERRORS) else ", ".join(errors) + " only"


def _pct(values) -> str:
    v = 100 * np.asarray(values)
    return f"{np.median(v):5.1f} % (worst {v.max():5.1f} %)"


def report(result: dict) -> str:
    cases = result["cases"]
    n_masks = sum(len(c["variants"]) for c in cases)
    lines = [f"{len(cases)} subjects ({sum(c['cohort'] == 'volunteer' for c in cases)} volunteers), "
             f"{result['variants']} noisy mask(s) each, phantom size {result['size']}, seed {result['seed']}, "
             f"post-processing bridges gaps of up to {result['max_gap']} slice(s)",
             f"errors: {errors_text(result['errors'])}",
             f"lesion rule: {result['lesion_rule']}",
             "",
             "Stability: noisy mask against its consensus (goals: CSA error <= 10 %, volume <= 5 %, same lesion "
             "segments in every patient, no lesion in any volunteer)",
             f"{'mask':<15} | {'CSA error: pooled median':>24} | {'per mask: median':<28} | {'CSA <= 10 %':>11} | "
             f"{'volume error: median':<28} | "
             f"{'vol <= 5 %':>10} | {'same segments own / norm':>24} | {'volunteer masks with a lesion own / norm':>40}"]
    for mode in MODES:
        st = stability(cases, mode)
        csa, vol, same, false = st["csa"], st["volume"], st["same"], st["volunteers_with_lesion"]
        lines.append(f"{mode:<15} | {st['pooled_csa_pct']:22.1f} % | {_pct(csa):<28} | "
                     f"{sum(e <= GOALS['csa'] for e in csa):>5} of {len(csa):<3} | "
                     f"{_pct(vol):<28} | {sum(e <= GOALS['volume'] for e in vol):>4} of {len(vol):<3} | "
                     f"{same['own']:>7} / {same['normative']:<3} of {st['patient_masks']:<4} | "
                     f"{false['own']:>15} / {false['normative']:<3} of {st['volunteer_masks']:<4}")
    rt = rater_figures(cases)
    if rt["csa"]:
        csa, vol = rt["csa"], rt["volume"]
        lines.append(f"{'raters':<15} | {rt['pooled_csa_pct']:22.1f} % | {_pct(csa):<28} | "
                     f"{sum(e <= GOALS['csa'] for e in csa):>5} of {len(csa):<3} | "
                     f"{_pct(vol):<28} | {sum(e <= GOALS['volume'] for e in vol):>4} of {len(vol):<3} | "
                     f"{rt['same_own']:>7} /     of {rt['patient_masks']:<4} | "
                     f"{rt['volunteers_with_lesion']:>15} /     of {rt['volunteer_masks']:<4}")
        lines.append("raters: each rater's mask, post-processed, against the consensus of the raters (own reference)")
    for mode in MODES:
        st = stability(cases, mode)
        lines.append(f"{mode}: {st['misses_true_ends']} of the {st['patient_masks'] - st['same']['own']} patient masks "
                     "without their consensus's segments (own) have the lesion's ends within one slice of the truth")
    lines += ["", "Lesions against the truth (found: a segment overlaps the true extent)",
              f"{'mask':<26} | {'focal found':>14} | {'focal ends +-1':>14} | {'extended found':>14} | "
              f"{'false lesions per volunteer':>27} | {'patient segments off the lesion':>31}"]
    for source in ("consensus", *MODES):
        for ref in ("own", "normative"):
            t = truth_figures(cases, source, ref)
            kinds = {kind: f"{sum(t[kind])} of {len(t[kind])}" for kind in ("focal", "extended")}
            ends, volunteer, off = t["ends"], t["volunteer_segments"], t["off"]
            lines.append(f"{source + ' / ' + ref:<26} | {kinds['focal']:>14} | {sum(ends):>4} of {len(ends):<6} | "
                         f"{kinds['extended']:>14} | "
                         f"{np.mean(volunteer) if volunteer else 0:>27.2f} | {sum(off):>15} in {len(off):<3} masks")
    fallback = sum(v[m]["references"]["normative"] != "normative" for c in cases for v in c["variants"] for m in MODES)
    lines += ["", f"normative: {fallback} of {2 * n_masks} measurements had no reference at their location and used "
                  "the subject's own (fewer than 3 volunteers)" if fallback else ""]
    def misses(c, m):
        return (m["csa_error"] > GOALS["csa"] or m["volume_error"] > GOALS["volume"]
                or (c["cohort"] == "volunteer" and bool(m["segments"]["own"]))
                or (c["cohort"] == "patient" and not same_segments(m["segments"]["own"], c["consensus"]["own"])))

    failing = [(c["id"], c["cohort"], v["errors"], v["post-processed"]) for c in cases for v in c["variants"]
               if misses(c, v["post-processed"])]
    if failing:
        lines += ["post-processed masks missing a goal (own reference):"]
        for pid, cohort, errors, m in failing:
            case = next(c for c in cases if c["id"] == pid)
            lines.append(f"  {pid} {cohort:<9} CSA {100 * m['csa_error']:.1f} %, "
                         f"volume {100 * m['volume_error']:.1f} %, segments {m['segments']['own']} "
                         f"vs consensus {case['consensus']['own']}"
                         + (f", truth {tuple(case['truth'])}" if case["truth"] else "") + f"; {', '.join(errors)}")
    lines.append(f"{result['seconds']:.0f} s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volunteers", type=int, default=10)
    parser.add_argument("--patients", type=int, default=42)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", help="FIRST-LAST (e.g. 0-9): run every seed and print one table row per seed "
                                        "and the totals instead of the report")
    parser.add_argument("--variants", type=int, default=2, help="noisy masks per subject")
    parser.add_argument("--size", choices=sorted(SIZES), default="small", help="phantom size (paper: slow)")
    parser.add_argument("--missed-branch-slices", type=int, default=1,
                        help="consecutive split slices on which the small branch is missed")
    parser.add_argument("--max-gap", type=int, default=None,
                        help="post-processing bridges gaps of up to this many slices (default: postprocess's)")
    rule = LesionRule()
    parser.add_argument("--k", type=float, default=rule.k, help="lesion threshold: centre + k x spread ...")
    parser.add_argument("--min-excess", type=float, default=rule.min_excess, help="... and at least centre x (1 + this)")
    parser.add_argument("--min-lesion-slices", type=int, default=rule.min_slices,
                        help="a lesion spans at least this many measured slices above threshold")
    parser.add_argument("--lesion-extent", choices=EXTENTS, default=rule.extent,
                        help="a lesion's extent: full width at half maximum, or its run above threshold")
    parser.add_argument("--min-lesion-separation", type=int, default=rule.min_separation,
                        help="half-maximum extent: segments fewer than this many nerve slices apart are one lesion")
    parser.add_argument("--errors", default=",".join(ERRORS),
                        help=f"comma-separated network-like errors to add (default all: {','.join(ERRORS)}); the "
                             "others are drawn all the same and left out, so each mask is the full one less them")
    parser.add_argument("--json", help="also write every case's numbers here")
    parser.add_argument("--compare", nargs=2, metavar=("FIRST.json", "SECOND.json"),
                        help="instead of running: the --json files of two --seeds runs of the same seeds, mask by "
                             "mask: patient masks missing 'same segments' in both, in one only, in neither")
    args = parser.parse_args()
    if args.compare:
        runs = []
        for f in args.compare:
            try:
                runs.append(json.loads(Path(f).read_text()))
            except (OSError, ValueError) as e:
                parser.error(f"--compare {f}: {e}")
            if not isinstance(runs[-1], list):
                parser.error(f"--compare {f}: not the --json file of a --seeds run")
        try:
            counts = compare_misses(*runs)
        except (KeyError, TypeError, ValueError) as e:
            parser.error(f"--compare: {e}")
        print(f"patient masks missing 'same segments' (own), {args.compare[0]} / {args.compare[1]}: "
              + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return
    lesion_rule = LesionRule(k=args.k, min_excess=args.min_excess, min_slices=args.min_lesion_slices,
                             extent=args.lesion_extent, min_separation=args.min_lesion_separation)
    errors = tuple(e.strip() for e in args.errors.split(",") if e.strip())
    if not errors or set(errors) - set(ERRORS):
        parser.error(f"--errors {args.errors!r}: expected a comma-separated subset of {','.join(ERRORS)}")
    if args.seeds:
        first, _, last = args.seeds.partition("-")
        if not (first.isdigit() and (last or first).isdigit()) or int(last or first) < int(first):
            parser.error(f"--seeds {args.seeds!r}: expected FIRST-LAST, e.g. 0-9")
        results = [run(args.volunteers, args.patients, seed, args.variants, args.size, args.missed_branch_slices,
                       args.max_gap, lesion_rule, errors) for seed in range(int(first), int(last or first) + 1)]
        print(f"errors: {errors_text(errors)}")
        print(f"lesion rule: {results[0]['lesion_rule']}")
        print(seeds_table(results))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
        return
    result = run(args.volunteers, args.patients, args.seed, args.variants, args.size, args.missed_branch_slices,
                 args.max_gap, lesion_rule, errors)
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
