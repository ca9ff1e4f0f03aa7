"""report.html of `nnunet-nerve segment`: one self-contained page (figures embedded as base64 PNG).

It shows, from top to bottom: the quality flags; the time of each stage (beside the paper's
19 ± 8 min of manual segmentation); the summary figures of the biomarkers (volume, length,
CSA, signal, lesion burden and segments); three slices at 20, 50 and 80 % of the nerve's
extent with the segmentation's contour (yellow) and what post-processing removed (red,
dashed), whole and zoomed around the nerve; the CSA and signal profile along the nerve with
the lesion segments (``biomarker_report.plot_profile``) and the maximum-intensity rendering of
the nerve (``biomarker_report.plot_mip``); and where the input, model and outputs are.
Slices are drawn as stored, rows downwards (the DICOM pixel matrix as a viewer shows it).
"""
from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import numpy as np

from nnunet_nerve.biomarkers.report import _figure

#: Manual segmentation time per scan in the paper (Balsiger et al. 2018), minutes.
MANUAL_MINUTES = (19, 8)
ZOOM_MARGIN_MM = 25.0
CONTOUR_COLOUR = "#ffd400"
REMOVED_COLOUR = "#ff3b30"


def three_nerve_slices(consensus: np.ndarray) -> list[int]:
    """Slices at 20 %, 50 % and 80 % of the nerve's extent along z (the middle slice when empty)."""
    zs = np.flatnonzero(consensus.reshape(consensus.shape[0], -1).any(axis=1))
    if zs.size == 0:
        return [consensus.shape[0] // 2]
    picks = [zs[int(round(f * (zs.size - 1)))] for f in (0.2, 0.5, 0.8)]
    return sorted(set(int(z) for z in picks))


_STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.flag { padding: .35em .7em; margin: .25em 0; border-radius: 4px; }
.raised { background: #fff1e0; border-left: 5px solid #e67e00; } .clear { background: #eef7ee; border-left: 5px solid #2e9d3a; }
img { max-width: 100%; } .small { color: #666; font-size: .9em; } code { background: #f4f4f4; padding: 0 .2em; }
"""


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _window(image: np.ndarray) -> tuple:
    lo, hi = np.percentile(image, [1, 99.5]) if image.size else (0.0, 1.0)
    return float(lo), float(max(hi, lo + 1e-6))


def _zoom_box(mask: np.ndarray, spacing_yx, shape_yx) -> tuple:
    """In-plane (row slice, column slice) around every nerve voxel plus ZOOM_MARGIN_MM (the whole slice when empty)."""
    ys, xs = np.nonzero(mask.any(axis=0))
    if ys.size == 0:
        return slice(0, shape_yx[0]), slice(0, shape_yx[1])
    my, mx = (int(np.ceil(ZOOM_MARGIN_MM / s)) for s in spacing_yx)
    return (slice(max(ys.min() - my, 0), min(ys.max() + my + 1, shape_yx[0])),
            slice(max(xs.min() - mx, 0), min(xs.max() + mx + 1, shape_yx[1])))


def plot_slices(image: np.ndarray, mask: np.ndarray, removed: "np.ndarray | None", spacing_zyx) -> bytes:
    """PNG: three slices (``three_nerve_slices``), whole (top) and zoomed (bottom),
    with the mask's contour and the voxels post-processing removed."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    slices = three_nerve_slices(mask)
    sz, sy, sx = spacing_zyx
    rows, cols = _zoom_box(mask, (sy, sx), mask.shape[1:])
    views = [(slice(None), slice(None))]
    if (rows.stop - rows.start, cols.stop - cols.start) != mask.shape[1:]:
        views.append((rows, cols))
    fig, axes = _figure(len(slices), len(views), (4.0 * len(slices), 4.1 * len(views)))
    lo, hi = _window(image)
    for i, z in enumerate(slices):
        for row, (ys, xs) in enumerate(views):
            ax = axes[row, i]
            ax.imshow(image[z][ys, xs], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest", aspect=sy / sx)
            if mask[z][ys, xs].any():
                ax.contour(mask[z][ys, xs].astype(float), levels=[0.5], colors=CONTOUR_COLOUR, linewidths=1.0)
            if removed is not None and removed[z][ys, xs].any():
                ax.contour(removed[z][ys, xs].astype(float), levels=[0.5], colors=REMOVED_COLOUR,
                           linewidths=1.0, linestyles="dashed")
            if row == 0 and len(views) > 1:
                ax.add_patch(Rectangle((cols.start - 0.5, rows.start - 0.5), cols.stop - cols.start,
                                       rows.stop - rows.start, fill=False, ec="#3a8ee8", lw=0.8))
            ax.set_title(f"slice {z} ({z * sz:.1f} mm)" if row == 0 else "zoomed", fontsize=9)
            ax.axis("off")
    handles = [Line2D([], [], color=CONTOUR_COLOUR, label="nerve (segmentation)")]
    if removed is not None and removed.any():
        handles.append(Line2D([], [], color=REMOVED_COLOUR, ls="--", label="removed by post-processing"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return _png(fig)


def _fmt(value, digits: int = 1, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}{unit}"


def summary_rows(summary: dict) -> list:
    """(name, value) rows of the biomarker summary shown in the report."""
    if not summary["nerve_found"]:
        return [("nerve", summary["message"])]
    csa, raw, signal = summary["csa_corrected_mm2"], summary["csa_mm2"], summary["signal_mean_norm"]
    lesion = summary["lesion"]
    segments = "; ".join(f"slices {s['first_slice']}-{s['last_slice']} ({s['start_mm']:.0f}-{s['end_mm']:.0f} mm, "
                         f"{'+'.join(s['criteria'])})" for s in lesion["segments"]) or "none"
    split = summary["split"]
    return [
        ("nerve", summary["message"]),
        ("volume", f"{summary['volume_mm3']:.0f} mm³ ({summary['volume_ml']:.2f} ml)"),
        ("length along the stack / along the centreline", f"{summary['length_mm']:.0f} mm / "
                                                          f"{summary['centreline_length_mm']:.0f} mm"),
        ("CSA, obliquity-corrected: mean / median / max", f"{_fmt(csa['mean'])} / {_fmt(csa['median'])} / "
                                                          f"{_fmt(csa['max'])} mm²"),
        ("CSA in the slice: mean / max", f"{_fmt(raw['mean'])} / {_fmt(raw['max'])} mm²"),
        ("signal (nerve / muscle): mean / max", f"{_fmt(signal['mean'], 2)} / {_fmt(signal['max'], 2)}"),
        ("split into tibial and peroneal", f"slices {split['first_slice']}-{split['last_slice']}"
                                           if split["found"] else "not found"),
        ("lesion burden", f"{100 * lesion['burden']:.0f} % of the nerve slices "
                          f"({lesion['reference']['kind']} reference; {lesion['rule']})"),
        ("lesion segments", segments),
    ]


def _table(rows, header=None, numeric_last: bool = False) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = [f"<td>{html.escape(str(c))}</td>" for c in row]
        if numeric_last:
            cells[-1] = f"<td class=\"num\">{html.escape(str(row[-1]))}</td>"
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{png_data_uri(png)}">'


def render_html(record: dict, slices_png: bytes, profile_png: bytes, mip_png: bytes) -> str:
    """The page for ``record`` (what `segment` writes to segment.json) and the three figures."""
    timings = record["timings_s"]
    total = sum(timings.values())
    manual = MANUAL_MINUTES
    flags = "\n".join(f'<div class="flag {"raised" if f["raised"] else "clear"}">'
                      + (f'<b>⚠ {html.escape(f["title"])}</b>: ' if f["raised"] else "✓ ")
                      + f'{html.escape(f["message"])}</div>' for f in record["flags"])
    model = record["model"]
    inp = record["input"]
    about = [("input", inp["path"]), ("input kind", inp["kind"])]
    if inp.get("series_uid"):
        about += [("series", f"{inp['series_uid']} ({inp.get('series_description') or 'no description'}, "
                             f"{inp['slices']} slices)")]
    about += [("grid (x, y, z)", f"{inp['size'][0]} x {inp['size'][1]} x {inp['size'][2]} voxels of "
                                 f"{inp['spacing'][0]:.3g} x {inp['spacing'][1]:.3g} x {inp['spacing'][2]:.3g} mm"),
              ("model", model["folder"]),
              ("trainer / folds", f"{model['trainer']} / {' '.join(map(str, model['folds']))}"),
              ("tile (patch) / step / mirroring", f"{' x '.join(map(str, model['patch_size']))} / "
                                                  f"{model['tile_step_size']} / {model['mirroring_axes'] or 'none'}"),
              ("post-processing", "on (nerve tube)" if record["postprocess"] else "off"),
              ("nnunet-nerve", record["version"])]
    outputs = [(name, path) for name, path in record["outputs"].items()]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Nerve segmentation: {html.escape(Path(inp['path']).name)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Peripheral nerve segmentation: {html.escape(Path(inp['path']).name)}</h1>",
        f'<p class="small">nnunet-nerve {html.escape(record["version"])}, {html.escape(record["created"])}. '
        "Automatic segmentation (FC-DenseNet of Balsiger et al., Front. Neurol. 2018, through nnU-Net); "
        "not a diagnosis: check the contours below.</p>",
        "<h2>Quality flags</h2>", flags,
        "<h2>Time</h2>",
        _table([(name, f"{seconds:.1f} s") for name, seconds in timings.items()]
               + [("total", f"{total:.1f} s")], ("stage", "elapsed"), numeric_last=True),
        f'<p class="small">Manual segmentation took {manual[0]} ± {manual[1]} min per scan in the paper; '
        f"this run took {total / 60:.1f} min on {html.escape(record['device'])} (the stages before this page; "
        f"writing the page itself is timed in segment.json).</p>",
        "<h2>Summary</h2>", _table(summary_rows(record["biomarkers"])),
        "<h2>Three slices</h2>", _img(slices_png, "three slices with the nerve contour"),
        "<h2>Cross-sectional area and signal along the nerve</h2>",
        _img(profile_png, "CSA and signal profile with lesion segments"),
        "<h2>Rendering of the nerve</h2>", _img(mip_png, "maximum-intensity rendering of the nerve"),
        "<h2>Input, model and outputs</h2>", _table(about), _table(outputs, ("output", "path")),
        '<p class="small">Definitions of every figure: docs/biomarkers.md and docs/segment.md of nnunet-nerve.</p>',
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_report(path: "str | os.PathLike", record: dict, image: np.ndarray, mask: np.ndarray,
                 removed: "np.ndarray | None", spacing_zyx, biomarker_dir: "str | os.PathLike") -> Path:
    """Write report.html to ``path`` (inside the caller's temporary output folder)."""
    biomarker_dir = Path(biomarker_dir)
    slices_png = plot_slices(image, mask, removed, spacing_zyx)
    page = render_html(record, slices_png, (biomarker_dir / "profile.png").read_bytes(),
                       (biomarker_dir / "mip.png").read_bytes())
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
