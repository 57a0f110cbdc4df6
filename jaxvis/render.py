"""Turning results into files: display images, labelled PNG grids (for papers), curves, a sweep's
files chunk by chunk, and the records and axes that the run report (``jaxvis.report``) shows.

Nothing here computes what the engine or saliency should: it only lays out what they return.
"""

from __future__ import annotations

import html
import itertools
import json
import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxvis import preprocess as pre
from jaxvis import report
from jaxvis.fileio import atomic_write
from jaxvis.images import colourise, safe_name, save_png  # noqa: F401  (render's names for them, as before)
from jaxvis.spec import ModelSpec

_FONTS: dict = {}
FONT_SIZE = 13


def font(size: int | None = None):
    """Pillow's built-in scalable font at ``size`` pixels (its bitmap font where FreeType is missing)."""
    size = int(size or FONT_SIZE)
    if size not in _FONTS:
        try:
            _FONTS[size] = ImageFont.load_default(size=size)
        except (TypeError, ImportError, OSError):
            _FONTS[size] = ImageFont.load_default()
    return _FONTS[size]


def to_display(spec: ModelSpec, x: np.ndarray, mode: str = "stretch") -> np.ndarray:
    """Network-input image(s) -> uint8 RGB. ``clip``: add the mean back (``to_image``) and clip to [0, 1].
    ``stretch``: add the mean back with the deviation from the mean image scaled per image so that its
    99.5th percentile reaches 0.45 (class models are faint next to the mean image; the paper's figures
    are contrast-stretched too)."""
    x = np.asarray(x, np.float32)
    img = np.asarray(pre.to_image(spec, x))
    if mode == "stretch":
        mean = np.asarray(pre.to_image(spec, np.zeros(x.shape[-3:], np.float32)))
        dev = img - mean
        axes = tuple(range(img.ndim - 3, img.ndim))
        scale = np.percentile(np.abs(dev), 99.5, axis=axes, keepdims=True)
        img = mean + dev * (0.45 / np.maximum(scale, 1e-8))
    elif mode != "clip":
        raise ValueError(f"display mode must be 'stretch' or 'clip', got {mode!r}")
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _text_size(draw: ImageDraw.ImageDraw, text: str, face=None) -> tuple[int, int]:
    box = draw.textbbox((0, 0), text, font=face or font())
    return box[2] - box[0], box[3] - box[1]


def grid(images: Sequence[Sequence[np.ndarray | None]], row_labels: Sequence[str], col_labels: Sequence[str],
         captions: Sequence[Sequence[str]] | None = None, title: str = "", marks: Sequence[Sequence[bool]] | None = None,
         cell: int | None = None) -> np.ndarray:
    """A labelled grid of uint8 images (rows x columns; None leaves a cell empty). ``captions`` go under
    each cell; ``marks`` draws a red frame (e.g. diverged points)."""
    rows, cols = len(images), max(len(r) for r in images)
    sample = next(im for r in images for im in r if im is not None)
    h, w = sample.shape[:2]
    if cell:
        scale = cell / max(h, w)
        h, w = max(1, round(h * scale)), max(1, round(w * scale))
    # The text scales with the cells, so the labels stay readable however large the figure is printed.
    face = font(max(FONT_SIZE, round(max(h, w) / 11)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = _text_size(probe, "Ag", face)[1] + 6
    left = max([_text_size(probe, t, face)[0] for t in row_labels] + [0]) + 10
    top = line + (line if title else 0) + 4
    cap = line if captions else 0
    pad = 6
    width = left + cols * (w + pad) + pad
    height = top + rows * (h + cap + pad) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 2), title, fill="black", font=face)
    for j, label in enumerate(col_labels):
        draw.text((left + j * (w + pad) + pad, top - line), label, fill="black", font=face)
    for i, label in enumerate(row_labels):
        y = top + i * (h + cap + pad) + pad
        draw.text((4, y + h // 2 - line // 2), label, fill="black", font=face)
        for j in range(cols):
            im = images[i][j] if j < len(images[i]) else None
            x = left + j * (w + pad) + pad
            if im is None:
                continue
            tile = Image.fromarray(im)
            if tile.size != (w, h):
                tile = tile.resize((w, h), Image.NEAREST)
            canvas.paste(tile, (x, y))
            if marks is not None and marks[i][j]:
                draw.rectangle([x - 2, y - 2, x + w + 1, y + h + 1], outline=(220, 0, 0), width=2)
            if captions:
                draw.text((x, y + h + 1), captions[i][j], fill=(60, 60, 60), font=face)
    return np.asarray(canvas)


def curves(series: dict[str, np.ndarray], title: str = "", size: tuple[int, int] = (360, 220),
           mark: int | None = None) -> np.ndarray:
    """A small line chart of one or more curves over steps (uint8 RGB). ``mark`` draws a vertical line."""
    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
    width, height = size
    canvas = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(canvas)
    left, right, top, bottom = 56, 10, 20, 24
    values = np.concatenate([np.asarray(v, np.float64).ravel() for v in series.values()])
    values = values[np.isfinite(values)]
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    n = max(len(np.asarray(v)) for v in series.values())
    draw.rectangle([left, top, width - right, height - bottom], outline=(150, 150, 150))
    draw.text((4, top - 2), f"{hi:.3g}", fill="black", font=font())
    draw.text((4, height - bottom - 10), f"{lo:.3g}", fill="black", font=font())
    draw.text((left, height - bottom + 4), "0", fill="black", font=font())
    draw.text((width - right - 30, height - bottom + 4), f"{n}", fill="black", font=font())
    if title:
        draw.text((left, 3), title, fill="black", font=font())

    def xy(i, v):
        x = left + (width - right - left) * (i / max(n - 1, 1))
        y = height - bottom - (height - bottom - top) * ((v - lo) / (hi - lo))
        return x, y

    for k, (name, values) in enumerate(series.items()):
        colour = colours[k % len(colours)]
        pts = [xy(i, v) for i, v in enumerate(np.asarray(values, np.float64)) if np.isfinite(v)]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        draw.text((width - right - 110, top + 4 + 12 * k), name, fill=colour, font=font())
    if mark is not None and mark >= 0:
        x, _ = xy(mark, lo)
        draw.line([(x, top), (x, height - bottom)], fill=(220, 0, 0), width=1)
    return np.asarray(canvas)


def html_page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """A self-contained page: ``sections`` are (heading, html body) pairs."""
    body = "\n".join(f"<h2>{html.escape(h)}</h2>\n{b}" for h, b in sections)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: middle; }}
img.thumb {{ width: 96px; image-rendering: pixelated; }}
img.grid {{ max-width: 100%; }}
.diverged {{ color: #c00; font-weight: bold; }}
pre {{ background: #f4f4f4; padding: 8px; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
{body}
</body></html>
"""


# ---------------------------------------------------------------------------------------------------
# A class-model sweep's run directory.

def point_label(sweep, point: dict, spec: ModelSpec, varying: Sequence[str]) -> str:
    """A point's varying axes' values as text, as the sweep labels them."""
    return (", ".join(sweep.label(n, point[n], spec) for n in varying)
            or sweep.label("target", point["target"], spec))


def _layout(axes: list[tuple[str, list]]) -> tuple[str | None, str | None, list[str]]:
    """(row axis, column axis, other varying axes) for the labelled grid."""
    varying = [n for n, v in axes if len(v) > 1]
    if not varying:
        return None, None, []
    col = "target" if "target" in varying else varying[-1]
    rest = [n for n in varying if n != col]
    row = rest[0] if rest else None
    return row, col, rest[1:]


def point_names(sweep, spec: ModelSpec, points: Sequence[dict], first: int = 0) -> list[str]:
    """File stems of points ``first``, ``first + 1``, ...: ``NNNNN_<target label>``."""
    return [f"{first + k:05d}_{safe_name(sweep.label('target', p['target'], spec))}" for k, p in enumerate(points)]


def _points_of(sweep, sl: slice) -> list[dict]:
    names = [n for n, _ in sweep.axes()]
    combos = itertools.islice(itertools.product(*(v for _, v in sweep.axes())), sl.start, sl.stop)
    return [dict(zip(names, combo)) for combo in combos]


def write_chunk(path: str, spec: ModelSpec, sweep, term_names: Sequence[str], chunk: int, sl: slice, result,
                display: str = "stretch", pngs: bool = True) -> list[str]:
    """Writes one finished chunk's files and returns its results.jsonl lines: points/NNNNN_<label>.png in
    the ``display`` mode and ..._<other mode>.png in the other, _itK.png per snapshot, curves/NNNNN.png,
    the chunk's curves for the page (report/curves/CCCCC.js) and its records (report/parts/CCCCC.jsonl),
    so the page of an unfinished run shows every finished chunk. ``pngs=False`` writes no PNG (the
    records then name no image files)."""
    axes = sweep.axes()
    varying = [name for name, v in axes if len(v) > 1]
    points = _points_of(sweep, sl)
    names = point_names(sweep, spec, points, sl.start)
    other = "clip" if display == "stretch" else "stretch"
    steps_snap = sorted(result.snapshots)
    if pngs:
        shown = {display: to_display(spec, result.images, display), other: to_display(spec, result.images, other)}
        snaps_shown = {k: to_display(spec, result.snapshots[k], display) for k in steps_snap}
    lines = []
    for local, (i, p, name) in enumerate(zip(range(sl.start, sl.stop), points, names)):
        label = point_label(sweep, p, spec, varying)
        d = int(result.diverged_step[local])
        files, snapshots, curve_png = {}, [], None
        if pngs:
            files = {display: f"points/{name}.png", other: f"points/{name}_{other}.png"}
            for mode, rel in files.items():
                save_png(os.path.join(path, rel), shown[mode][local])
            for k in steps_snap:
                rel = f"points/{name}_it{k}.png"
                save_png(os.path.join(path, rel), snaps_shown[k][local])
                snapshots.append([k, rel])
            curve_png = f"curves/{i:05d}.png"
            save_png(os.path.join(path, curve_png), curves({"loss": result.loss[:, local], "score": result.score[:, local]},
                                                          title=label[:48], mark=d))
        lines.append(json.dumps({
            "index": i, "file": files.get(display), "files": files, "display": display, "snapshots": snapshots,
            "curve_png": curve_png, "chunk": chunk, "label": label, "at": report.point_at(p, axes),
            "target": p["target"], "target_name": sweep.label("target", p["target"], spec),
            "lr": p["lr"], "loss": p["loss"], "weights": dict(zip(term_names, sweep.point_weights(p, term_names))),
            "init": p["init"], "seed": p["seed"], "boxes": p["boxes"],
            "final_loss": float(result.final_loss[local]), "final_score": float(result.final_score[local]),
            "final_prob": float(result.final_prob[local]),
            "diverged": d >= 0, "diverged_step": d if d >= 0 else None,
            **{k: p[k] for k in ("start", "decay") if k in p},  # the axes that only some sweeps have
        }, sort_keys=True))
    report.write_curves(path, chunk, sl.start, result.loss, result.score, result.diverged_step)
    report.write_part(path, chunk, lines)
    return lines


def start_report(path: str, spec: ModelSpec, sweep, term_names: Sequence[str], settings: dict,
                 run_config: dict | None = None, rundir=None, display: str = "stretch", pngs: bool = True) -> str:
    """Writes axes.json and the run's page (showing the chunks finished so far); returns index.html.
    With ``rundir`` (a resumed run), finished chunks whose records are missing (a run stopped between
    saving a chunk and writing its files) are written first, so the page shows every finished chunk."""
    report.write_axes(path, report.sweep_axes(spec, sweep, term_names, settings, run_config))
    for chunk in sorted(rundir.done_chunks()) if rundir is not None else ():
        if not os.path.exists(os.path.join(report.parts_dir(path), f"{chunk:05d}.jsonl")):
            write_chunk(path, spec, sweep, term_names, chunk, *rundir.load_chunk(chunk), display=display, pngs=pngs)
    return report.write_sweep_page(path)


def _reusable_part(path: str, chunk: int, sl: slice, display: str, pngs: bool) -> list[str] | None:
    """The lines of a chunk already written by ``write_chunk`` during the run (same points, same display)."""
    part = os.path.join(report.parts_dir(path), f"{chunk:05d}.jsonl")
    curves_js = os.path.join(path, report.PAGE_DIR, "curves", f"{chunk:05d}.js")
    if not (os.path.exists(part) and os.path.exists(curves_js)):
        return None
    with open(part, encoding="utf-8") as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    try:
        records = [json.loads(line) for line in lines]
    except json.JSONDecodeError:
        return None
    if [r.get("index") for r in records] != list(range(sl.start, sl.stop)):
        return None
    if any(r.get("display") != display or r.get("chunk") != chunk or bool(r.get("files")) != pngs
           for r in records):
        return None
    if not all(os.path.exists(os.path.join(path, rel)) for r in records for rel in r["files"].values()):
        return None
    return lines


def write_sweep(path: str, spec: ModelSpec, sweep, chunks, term_names: Sequence[str], settings: dict,
                display: str = "stretch", pngs: bool = True) -> str:
    """Writes a sweep's outputs into ``path`` and returns the index.html path.

    ``chunks`` yields ``(points slice, Result)`` in grid order (e.g. from a RunDir); they are written one
    at a time, so memory stays bounded by a chunk whatever the size of the grid: images.npy
    (P, H, W, 3 float32, network input space) and snapshots.npy (S, P, H, W, 3) are filled through memory
    maps, with snapshot_steps.json; each chunk's PNGs and records (``write_chunk``; kept if the run wrote
    them already); results.jsonl; then grid*.png and iterations.png read back from images.npy; axes.json
    (if the run did not write it at its start) and the report page, index.html. With ``pngs=False`` no
    PNG is written (grids too large to look at point by point); the page then shows the numbers."""
    axes = sweep.axes()
    points = sweep.point_axes()
    n = len(points)
    varying = [name for name, v in axes if len(v) > 1]
    h, w = spec.input_size
    os.makedirs(path, exist_ok=True)
    tmp_images, tmp_snaps = os.path.join(path, ".images.npy.part"), os.path.join(path, ".snapshots.npy.part")
    images = snaps = None
    steps_snap: list[int] = []
    lines: list[str] = []
    final = {"score": np.zeros(n, np.float32), "prob": np.zeros(n, np.float32), "diverged": np.full(n, -1, np.int64)}
    for chunk, (sl, result) in enumerate(chunks):
        if images is None:
            steps_snap = sorted(result.snapshots)
            images = np.lib.format.open_memmap(tmp_images, "w+", np.float32, (n, h, w, 3))
            snaps = np.lib.format.open_memmap(tmp_snaps, "w+", np.float32, (len(steps_snap), n, h, w, 3))
        images[sl] = result.images
        for j, k in enumerate(steps_snap):
            snaps[j, sl] = result.snapshots[k]
        chunk_lines = _reusable_part(path, chunk, sl, display, pngs)
        if chunk_lines is None:
            chunk_lines = write_chunk(path, spec, sweep, term_names, chunk, sl, result, display, pngs)
        lines += chunk_lines
        final["score"][sl], final["prob"][sl] = result.final_score, result.final_prob
        final["diverged"][sl] = result.diverged_step
    if images is None or len(lines) != n:
        raise ValueError(f"the chunks cover {len(lines)} of the grid's {n} points")
    images.flush(), snaps.flush()
    del images, snaps
    os.replace(tmp_images, os.path.join(path, "images.npy"))
    os.replace(tmp_snaps, os.path.join(path, "snapshots.npy"))
    atomic_write(os.path.join(path, "snapshot_steps.json"), lambda f: f.write(json.dumps(steps_snap).encode()))
    atomic_write(os.path.join(path, "results.jsonl"), lambda f: f.write(("\n".join(lines) + "\n").encode()))

    stored = np.load(os.path.join(path, "images.npy"), mmap_mode="r")
    stored_snaps = np.load(os.path.join(path, "snapshots.npy"), mmap_mode="r")

    def shown_point(i):
        return to_display(spec, stored[i], display)

    # Labelled grids: one per combination of the axes that are neither rows nor columns (at most 50).
    row, col, others = _layout(axes)
    index = {tuple((a, json.dumps(p[a])) for a in varying): i for i, p in enumerate(points)}
    values = dict(axes)
    other_combos = list(itertools.product(*(values[a] for a in others))) or [()]
    for g, combo in enumerate(other_combos[:50] if pngs else []):
        fixed = dict(zip(others, combo))
        row_vals = values[row] if row else [None]
        col_vals = values[col] if col else [None]
        cells, caps, marks = [], [], []
        for rv in row_vals:
            r_cells, r_caps, r_marks = [], [], []
            for cv in col_vals:
                key = dict(fixed)
                if row:
                    key[row] = rv
                if col:
                    key[col] = cv
                i = index[tuple((a, json.dumps(key[a])) for a in varying)]
                r_cells.append(shown_point(i))
                d = final["diverged"][i]
                r_caps.append(f"diverged@{d}" if d >= 0 else f"S={final['score'][i]:.3g} p={final['prob'][i]:.2f}")
                r_marks.append(bool(d >= 0))
            cells.append(r_cells), caps.append(r_caps), marks.append(r_marks)
        title = ", ".join(sweep.label(a, v, spec) for a, v in fixed.items())
        image = grid(cells, [sweep.label(row, v, spec) for v in row_vals] if row else [""],
                     [sweep.label(col, v, spec) for v in col_vals] if col else [""],
                     captions=caps, title=title, marks=marks, cell=160)
        name = "grid.png" if len(other_combos) == 1 else f"grid_{g:03d}.png"
        save_png(os.path.join(path, name), image)

    # Iteration study: rows = points (up to 32), columns = snapshot iterations.
    if pngs:
        rows = list(range(min(n, 32)))
        iter_image = grid([[to_display(spec, stored_snaps[j, i], display) for j in range(len(steps_snap))] for i in rows],
                          [point_label(sweep, points[i], spec, varying)[:40] for i in rows], [f"it {k}" for k in steps_snap],
                          cell=112, title="images after k iterations")
        save_png(os.path.join(path, "iterations.png"), iter_image)

    if not os.path.exists(os.path.join(path, report.AXES_FILE)):
        report.write_axes(path, report.sweep_axes(spec, sweep, term_names, settings))
    return report.write_sweep_page(path)


# ---------------------------------------------------------------------------------------------------
# Saliency overlays.

def overlay(image: np.ndarray, saliency_map: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Heat map over a (H, W, 3) image in [0, 1] or uint8."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    heat = colourise(saliency_map).astype(np.float64)
    return (img * (1 - alpha) + heat * alpha + 0.5).astype(np.uint8)


def draw_boxes(image: np.ndarray, boxes, colours=None, labels=None, width: int = 2) -> np.ndarray:
    """Boxes (x1, y1, x2, y2 pixels) drawn on a uint8 RGB image, with optional text labels."""
    canvas = Image.fromarray(np.asarray(image))
    draw = ImageDraw.Draw(canvas)
    colours = colours or [(0, 255, 0)] * len(boxes)
    for k, box in enumerate(boxes):
        if box is None:
            continue
        x1, y1, x2, y2 = (float(v) for v in box)
        if not all(np.isfinite([x1, y1, x2, y2])):
            continue
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        # PIL includes the last pixel; a box thinner than a pixel is drawn as a line
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=tuple(colours[k]), width=width)
        if labels and labels[k]:
            face = font(max(11, min(canvas.size) // 24))
            draw.text((x1 + 2, max(0, y1 - face.size - 2)), labels[k], fill=tuple(colours[k]), font=face)
    return np.asarray(canvas)
