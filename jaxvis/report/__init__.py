"""The run report: one static page per run directory, and one per folder of runs.

A page is ``index.html`` (or ``runs.html`` for a folder) beside a ``report/`` folder that holds the page's
script and style (package data, plain JavaScript, no library) and ``data.js``, which assigns the page's
data to ``window.JAXVIS_DATA``. Loading data through a ``<script>`` tag works from ``file://`` under the
browsers' default security (``fetch`` of local files does not) and from any static web server.

The data are the run's own files, read back: ``axes.json`` (the grid's axes, written when a sweep starts)
and ``results.jsonl`` (one line per finished point; while a sweep runs, one part file per finished chunk
in ``report/parts``). Everything the page shows is computed here or by the library; the page lays out.
"""

from __future__ import annotations

import datetime
import glob
import html
import json
import math
import os
import shutil

from jaxvis.fileio import atomic_write

PAGE_DIR = "report"
STATIC = ("report.js", "report.css")
AXES_FILE = "axes.json"
RESULTS_FILE = "results.jsonl"
FORMAT = 1


def static_dir() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


def _clean(value):
    """JSON-safe copy: NaN and infinities become None (JavaScript's JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _write_text(path: str, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")), sync=False)


def read_jsonl(path: str) -> list[dict]:
    """The records of a JSON-lines file; a torn last line (a writer killed mid-line) is skipped."""
    out = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if k != len(lines) - 1:
                raise ValueError(f"{path}: line {k + 1} is not JSON; the file is damaged.") from None
    return out


def _write_page(folder: str, html_name: str, data_name: str, title: str, data: dict) -> str:
    """Writes ``folder/html_name`` and ``folder/report/{data_name, report.js, report.css}``."""
    assets = os.path.join(folder, PAGE_DIR)
    os.makedirs(assets, exist_ok=True)
    for name in STATIC:
        shutil.copyfile(os.path.join(static_dir(), name), os.path.join(assets, name))
    text = "window.JAXVIS_DATA = " + json.dumps(_clean(data), separators=(",", ":"), allow_nan=False) + ";\n"
    _write_text(os.path.join(assets, data_name), text)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{PAGE_DIR}/report.css">
</head><body>
<noscript>This report is drawn by JavaScript; the data are in results.jsonl and axes.json.</noscript>
<div id="app" class="loading">Loading…</div>
<script src="{PAGE_DIR}/{data_name}"></script>
<script src="{PAGE_DIR}/report.js"></script>
</body></html>
"""
    out = os.path.join(folder, html_name)
    _write_text(out, page)
    return out


# ---------------------------------------------------------------------------------------------------
# Class-model sweeps.

def sweep_axes(spec, sweep, term_names, settings: dict, run_config: dict | None = None) -> dict:
    """The document written as ``axes.json``: each axis with its values and their labels, the axes that
    vary, the model and the run's settings."""

    axes = []
    for name, values in sweep.axes():
        axes.append({"name": name, "values": values, "labels": [sweep.label(name, v, spec) for v in values]})
    run_config = run_config or {}
    return {
        "format": FORMAT, "kind": "sweep", "arch": spec.arch, "n_points": int(sweep.size),
        "input_size": list(spec.input_size),
        "axes": axes, "varying": [a["name"] for a in axes if len(a["values"]) > 1],
        "term_names": list(term_names), "settings": settings,
        "steps": run_config.get("steps", settings.get("steps")), "snapshots": run_config.get("snapshots"),
        "chunk_size": run_config.get("chunk_size"), "n_chunks": run_config.get("n_chunks"),
        "display": settings.get("display") or "stretch",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def point_at(point: dict, axes: list[tuple[str, list]]) -> dict[str, int]:
    """A point's index along each axis (what the page filters and compares by)."""
    return {name: values.index(point[name]) for name, values in axes}


def write_axes(run_dir: str, doc: dict) -> str:
    """Writes ``axes.json``; an existing one (a resumed run) keeps its creation date."""
    path = os.path.join(run_dir, AXES_FILE)
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                doc = {**doc, "created": json.load(f).get("created", doc["created"])}
        except (OSError, json.JSONDecodeError):
            pass
    _write_text(path, json.dumps(_clean(doc), indent=1, sort_keys=True, allow_nan=False))
    return path


def parts_dir(run_dir: str) -> str:
    return os.path.join(run_dir, PAGE_DIR, "parts")


def write_part(run_dir: str, chunk: int, lines: list[str]) -> None:
    """The records of one finished chunk, for the page of a run still in progress."""
    _write_text(os.path.join(parts_dir(run_dir), f"{chunk:05d}.jsonl"), "\n".join(lines) + "\n")


def sweep_records(run_dir: str, n_points: int) -> tuple[list[dict], bool]:
    """(records in grid order, finished): results.jsonl once the run has written it whole, otherwise the
    finished chunks' part files."""
    results = os.path.join(run_dir, RESULTS_FILE)
    if os.path.exists(results):
        records = read_jsonl(results)
        if len(records) == n_points:
            return records, True
    records = []
    for path in sorted(glob.glob(os.path.join(parts_dir(run_dir), "*.jsonl"))):
        records += read_jsonl(path)
    records = sorted({r["index"]: r for r in records}.values(), key=lambda r: r["index"])
    return records, len(records) == n_points


def status_of(records: list[dict], total: int, finished: bool) -> dict:
    diverged = sum(1 for r in records if r.get("diverged"))
    return {"finished": finished, "done": len(records), "total": total, "diverged": diverged,
            "text": ("finished" if finished else f"partial: {len(records)} of {total} points")
            + (f", {diverged} diverged" if diverged else "")}


def write_sweep_page(run_dir: str) -> str:
    """(Re)writes a sweep's page from ``axes.json`` and its results; returns the index.html path."""
    path = os.path.join(run_dir, AXES_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir} has no {AXES_FILE}: it is not a sweep's run directory (or was written "
                                "by an older jaxvis; run it again with --resume to rewrite its outputs).")
    try:
        axes = _read_axes(path)
    except RunReadError as e:
        raise RunReadError(f"{run_dir}: {e}") from None
    records, finished = sweep_records(run_dir, axes["n_points"])
    figures = sorted(os.path.basename(f) for f in glob.glob(os.path.join(run_dir, "grid*.png")))
    figures += ["iterations.png"] if os.path.exists(os.path.join(run_dir, "iterations.png")) else []
    data = {"kind": "sweep", "title": f"jaxvis class models: {axes['arch']}", "axes": axes, "points": records,
            "status": status_of(records, axes["n_points"], finished), "curves_dir": f"{PAGE_DIR}/curves",
            "figures": figures, "warnings": run_warnings(run_dir)}
    return _write_page(run_dir, "index.html", "data.js", data["title"], data)


def run_warnings(run_dir: str) -> list[str]:
    """What the run said in ``warnings.jsonl`` (chunk files set aside and recomputed, diverged points), in
    order; a damaged file gives one line saying so rather than no page."""
    path = os.path.join(run_dir, "warnings.jsonl")
    if not os.path.exists(path):
        return []
    try:
        return [str(r.get("warning", r)) if isinstance(r, dict) else str(r) for r in read_jsonl(path)]
    except (OSError, ValueError) as e:
        return [f"warnings.jsonl could not be read ({e})"]


def write_curves(run_dir: str, chunk: int, first: int, loss, score, diverged) -> str:
    """The loss and score curves of one chunk's points as a script the page loads when a point's detail is
    opened: ``JAXVIS_CURVES(chunk, {index: {loss, score, diverged_step}})``."""
    import numpy as np

    loss, score = np.asarray(loss, np.float64), np.asarray(score, np.float64)

    def rounded(column):
        return [float(f"{v:.6g}") if np.isfinite(v) else None for v in column]

    curves = {}
    for local in range(loss.shape[1]):
        d = int(diverged[local])
        curves[str(first + local)] = {"loss": rounded(loss[:, local]), "score": rounded(score[:, local]),
                                      "diverged_step": d if d >= 0 else None}
    text = f"JAXVIS_CURVES({chunk}, " + json.dumps(curves, separators=(",", ":"), allow_nan=False) + ");\n"
    out = os.path.join(run_dir, PAGE_DIR, "curves", f"{chunk:05d}.js")
    _write_text(out, text)
    return out


# ---------------------------------------------------------------------------------------------------
# Saliency runs.

def _saliency_assets(run_dir: str, records: list[dict]) -> dict[str, dict]:
    """Copies each source image into ``report/images`` as PNG and writes each map as a heat-map PNG in
    ``report/maps``; returns per image path {file, width, height} (file None where it cannot be read)."""
    import numpy as np
    from PIL import Image

    from jaxvis import images as image_files

    images: dict[str, dict] = {}
    names: set[str] = set()
    for r in records:
        src = r.get("image")
        if src is None or src in images:
            continue
        stem = image_files.safe_name(os.path.splitext(os.path.basename(str(src)))[0])
        name, k = stem, 1
        while name in names:
            name, k = f"{stem}_{k}", k + 1
        names.add(name)
        entry = {"file": None, "width": None, "height": None, "source": src}
        candidates = [src] if os.path.isabs(src) else [src, os.path.join(run_dir, src)]
        for candidate in candidates:
            if os.path.exists(candidate):
                try:
                    with Image.open(candidate) as im:
                        rgb = im.convert("RGB")
                except OSError:
                    continue
                rel = f"{PAGE_DIR}/images/{name}.png"
                image_files.save_png(os.path.join(run_dir, rel), np.asarray(rgb))
                entry.update(file=rel, width=rgb.width, height=rgb.height)
                break
        images[src] = entry
    for r in records:
        m = r.get("map")
        if not m or not os.path.exists(os.path.join(run_dir, m)):
            continue
        values = np.load(os.path.join(run_dir, m))
        rel = f"{PAGE_DIR}/maps/{image_files.safe_name(os.path.splitext(os.path.basename(m))[0])}.png"
        image_files.save_png(os.path.join(run_dir, rel), image_files.colourise(values))
        r["map_png"] = rel
        r.setdefault("map_size", [int(values.shape[1]), int(values.shape[0])])
    return images


def saliency_groups(records: list[dict], images: dict[str, dict]) -> list[dict]:
    """Records grouped by image, then by method; a method's items in detection-rank order (then as
    written)."""
    groups: dict[str, dict] = {}
    for k, r in enumerate(records):
        r = {**r, "n": k}
        src = r.get("image") or "?"
        info = images.get(src, {})
        g = groups.setdefault(src, {"image": src, "file": info.get("file"), "width": info.get("width"),
                                    "height": info.get("height"), "methods": {}})
        if g["width"] is None and r.get("map_size"):
            g["width"], g["height"] = r["map_size"]
        g["methods"].setdefault(r.get("method") or "gradient", []).append(r)
    out = []
    for g in groups.values():
        methods = []
        for name, items in g["methods"].items():
            items.sort(key=lambda r: (r.get("detection") is None, r.get("detection") or 0, r["n"]))
            methods.append({"method": name, "items": items})
        out.append({**g, "methods": methods})
    return out


def write_saliency(run_dir: str) -> str:
    """Writes the page of a saliency run (``experiments.saliency``'s output folder) from its results.jsonl;
    returns the index.html path. Records may lack any key but ``map``'s file; detections of one image are
    shown side by side, per method."""
    results = os.path.join(run_dir, RESULTS_FILE)
    if not os.path.exists(results):
        raise FileNotFoundError(f"{run_dir} has no {RESULTS_FILE}: run experiments.saliency with --out {run_dir}.")
    records = read_jsonl(results)
    images = _saliency_assets(run_dir, records)
    groups = saliency_groups(records, images)
    methods = sorted({r.get("method") or "gradient" for r in records})
    data = {"kind": "saliency", "title": "jaxvis saliency", "groups": groups, "methods": methods,
            "images": [g["image"] for g in groups],
            "status": {"finished": True, "done": len(records), "total": len(records), "diverged": 0,
                       "text": f"{len(records)} maps"}}
    return _write_page(run_dir, "index.html", "data.js", data["title"], data)


# ---------------------------------------------------------------------------------------------------
# Atlases of a layer's channels.

ATLAS_FILE = "atlas.json"
ATLAS_TILE = 96        # most pixels a tile of the atlas's sheets takes
ATLAS_SHEET_COLUMNS = 16


def _sheet(path: str, tiles, columns: int) -> dict:
    """Writes (C, S, h, w, 3) tiles in [0, 1] as one PNG, channel c's tile s at row c // columns, column
    (c % columns) * S + s, each at most ``ATLAS_TILE`` pixels a side; returns where they are."""
    import numpy as np
    from PIL import Image

    from jaxvis import images as image_files

    tiles = np.asarray(tiles, np.float32)
    c, s, h, w = tiles.shape[:4]
    side = min(ATLAS_TILE, max(h, w))
    th, tw = max(1, round(h * side / max(h, w))), max(1, round(w * side / max(h, w)))
    cols = min(columns, c)
    rows = -(-c // cols)
    sheet = np.zeros((rows * th, cols * s * tw, 3), np.uint8)
    for ch in range(c):
        for k in range(s):
            im = Image.fromarray((np.clip(tiles[ch, k], 0, 1) * 255 + 0.5).astype(np.uint8))
            if (h, w) != (th, tw):
                im = im.resize((tw, th), Image.BILINEAR if min(h, w) > th else Image.NEAREST)
            r, col = ch // cols, (ch % cols) * s + k
            sheet[r * th:(r + 1) * th, col * tw:(col + 1) * tw] = np.asarray(im)
    image_files.save_png(path, sheet)
    return {"file": os.path.relpath(path, os.path.dirname(os.path.dirname(path))).replace(os.sep, "/"),
            "columns": cols, "per": s, "tile": [tw, th], "size": [cols * s * tw, rows * th]}


def write_atlas(run_dir: str, atlas) -> str:
    """Writes an atlas (``jaxvis.features.build_atlas``'s) into ``run_dir``: ``pictures.npy`` and ``patches.npy``
    (the arrays), their sheets for the page, ``atlas.json`` last (a folder without it holds no atlas) and
    the page; returns the index.html path."""
    import numpy as np

    os.makedirs(os.path.join(run_dir, PAGE_DIR), exist_ok=True)
    doc = dict(atlas.doc)
    sheets = {"patches": _sheet(os.path.join(run_dir, PAGE_DIR, "atlas_patches.png"), atlas.patches,
                                ATLAS_SHEET_COLUMNS)}
    atomic_write(os.path.join(run_dir, "patches.npy"), lambda f: np.save(f, np.asarray(atlas.patches, np.float32)),
                 sync=False)
    if atlas.pictures is not None:
        sheets["pictures"] = _sheet(os.path.join(run_dir, PAGE_DIR, "atlas_pictures.png"), atlas.pictures,
                                    ATLAS_SHEET_COLUMNS)
        atomic_write(os.path.join(run_dir, "pictures.npy"),
                     lambda f: np.save(f, np.asarray(atlas.pictures, np.float32)), sync=False)
    doc["sheets"] = sheets
    _write_text(os.path.join(run_dir, ATLAS_FILE), json.dumps(_clean(doc), indent=1, allow_nan=False) + "\n")
    return write_atlas_page(run_dir)


def read_atlas(run_dir: str) -> dict:
    """The atlas document of ``run_dir``; RunReadError when it cannot be read."""
    path = os.path.join(run_dir, ATLAS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise RunReadError(f"{path} cannot be read ({e})") from None
    if not isinstance(doc, dict) or doc.get("kind") != "atlas" or not isinstance(doc.get("classes"), dict) \
            or not isinstance(doc.get("channels"), int):
        raise RunReadError(f"{path} is not an atlas (kind, channels and classes are missing)")
    return doc


def write_atlas_page(run_dir: str) -> str:
    """Writes the page of an atlas directory from its atlas.json; returns the index.html path."""
    doc = read_atlas(run_dir)
    title = f"jaxvis atlas: {doc.get('model')} {doc.get('layer')}"
    data = {**doc, "kind": "atlas", "title": title, "status": {"finished": True, "done": doc["channels"],
                                                               "total": doc["channels"], "diverged": 0,
                                                               "text": f"{doc['channels']} channels"}}
    return _write_page(run_dir, "index.html", "data.js", title, data)


# ---------------------------------------------------------------------------------------------------
# A folder of runs.

def _date(path: str) -> str:
    t = os.path.getmtime(path)
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="seconds")


class RunReadError(ValueError):
    """A run directory whose data files cannot be read (damaged JSON, missing fields)."""


def _read_axes(path: str) -> dict:
    """``axes.json``, checked for the fields the pages read; RunReadError (saying what is wrong) otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            axes = json.load(f)
    except UnicodeDecodeError:
        raise RunReadError(f"{AXES_FILE} is not text (the file is damaged)") from None
    except json.JSONDecodeError as e:
        raise RunReadError(f"{AXES_FILE} is not valid JSON ({e}); the file is damaged") from None
    if not isinstance(axes, dict):
        raise RunReadError(f"{AXES_FILE} holds a {type(axes).__name__}, not a JSON object")
    n = axes.get("n_points")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise RunReadError(f"{AXES_FILE} has no valid n_points (got {n!r})")
    if not isinstance(axes.get("axes"), list) or not all(
            isinstance(a, dict) and "name" in a and isinstance(a.get("values"), list) for a in axes["axes"]):
        raise RunReadError(f"{AXES_FILE} has no valid axes list (each axis a name and its values)")
    return axes


def _advice(run_dir: str) -> str:
    if os.path.exists(os.path.join(run_dir, AXES_FILE)):
        return ("rerun the sweep into it with --resume to rewrite its files, or move the folder out of the one "
                "reported")
    return "rerun experiments.saliency with --out into it, or move the folder out of the one reported"


def unreadable_run(reason: str) -> dict:
    """The folder page's entry of a run directory whose data cannot be read: no link, the reason as status."""
    return {"kind": "unreadable", "model": None, "points": None, "grid": "", "date": "", "error": reason,
            "status": {"finished": False, "unreadable": True, "done": 0, "total": 0, "diverged": 0,
                       "text": f"not read: {reason}"}}


def describe_run(run_dir: str, refresh: bool = True) -> dict | None:
    """What the folder page lists of one run directory (None if ``run_dir`` is not one); with ``refresh``
    the run's own page is rewritten from its data first. Raises RunReadError (or OSError) for a run
    directory whose data cannot be read; ``list_runs`` lists such a run as unreadable, with the reason."""
    axes_path = os.path.join(run_dir, AXES_FILE)
    results = os.path.join(run_dir, RESULTS_FILE)
    if os.path.exists(os.path.join(run_dir, ATLAS_FILE)):
        doc = read_atlas(run_dir)
        if refresh:
            write_atlas_page(run_dir)
        return {"kind": "atlas", "model": doc.get("model"), "points": doc["channels"],
                "grid": f"{doc.get('layer')}: {doc['channels']} channels x {len(doc['classes'])} classes",
                "date": _date(os.path.join(run_dir, ATLAS_FILE)),
                "status": {"finished": True, "done": doc["channels"], "total": doc["channels"], "diverged": 0,
                           "text": "finished"}}
    if os.path.exists(axes_path):
        axes = _read_axes(axes_path)
        if refresh:
            write_sweep_page(run_dir)
        records, finished = sweep_records(run_dir, axes["n_points"])
        status = status_of(records, axes["n_points"], finished)
        grid = " × ".join(f"{len(a['values'])} {a['name']}" for a in axes["axes"] if len(a["values"]) > 1)
        return {"kind": "class models", "model": axes.get("arch"), "points": axes["n_points"],
                "grid": grid or "1 point", "date": axes.get("created") or _date(axes_path), "status": status}
    if os.path.exists(results):
        records = read_jsonl(results)
        if not records:
            raise RunReadError(f"{RESULTS_FILE} holds no records and there is no {AXES_FILE}")
        if not all(isinstance(r, dict) for r in records) or "map" not in records[0]:
            raise RunReadError(f"{RESULTS_FILE} is not a saliency run's (its records have no map) and there is "
                               f"no {AXES_FILE} (a sweep's); the run was written by an older jaxvis or is damaged")
        if refresh:
            write_saliency(run_dir)
        methods = sorted({r.get("method") or "gradient" for r in records})
        n_images = len({r.get("image") for r in records})
        return {"kind": "saliency", "model": records[0].get("model"), "points": len(records),
                "grid": f"{n_images} image(s) × {len(records) // max(n_images, 1)} map(s), {', '.join(methods)}",
                "date": _date(results), "status": {"finished": True, "done": len(records), "total": len(records),
                                                   "diverged": 0, "text": "finished"}}
    return None


def list_runs(folder: str, refresh: bool = True) -> list[dict]:
    """The run directories under ``folder`` (itself included), searched recursively, as the folder page
    lists them; with ``refresh`` each run's own page is rewritten from its data."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder} is not a folder; give the folder that holds the run directories.")
    runs = []
    for here, dirs, _ in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in (PAGE_DIR, "chunks", "points", "curves") and not d.startswith("."))
        path = os.path.relpath(here, folder).replace(os.sep, "/")
        try:
            entry = describe_run(here, refresh=refresh)
        except (RunReadError, OSError, ValueError, KeyError, TypeError) as e:
            # one damaged run must not cost the page of the others: it is listed, with the reason
            reason = str(e) if isinstance(e, (RunReadError, OSError, ValueError)) else f"{type(e).__name__}: {e}"
            entry = unreadable_run(f"{reason}; {_advice(here)}")
            entry["path"], entry["link"] = path, None
            runs.append(entry)
            dirs[:] = []
            continue
        if entry is not None:
            entry["path"] = path
            entry["link"] = "index.html" if path == "." else path + "/index.html"
            runs.append(entry)
            dirs[:] = []
    return runs


def write_folder(folder: str, out: str = "runs.html", refresh: bool = True) -> str:
    """Writes ``folder/out``, a page listing the run directories under ``folder``, each linking to its
    report; returns its path. A run whose data cannot be read is listed with the reason, without a link.

    Example:

    ```python
    import tempfile
    import optax
    import jaxvis
    from jaxvis import assets, engine, report, sweeps, objectives as O

    model = jaxvis.load(assets.path("classifier"))
    runs = tempfile.mkdtemp()
    for lr in (0.1, 1.0):                                   # two run directories under one folder
        sweep = engine.Sweep(targets=[0], lrs=[lr], losses=[O.score()])
        eng = engine.Engine(model, sweep, optimizer=optax.sgd, steps=5)
        sweeps.run_engine(eng, sweep, f"{runs}/lr{lr:g}", check_space=False)
    print(report.write_folder(runs))                        # runs.html, linking each run's index.html
    ```
    """
    runs = list_runs(folder, refresh=refresh)
    data = {"kind": "folder", "title": f"jaxvis runs in {os.path.basename(os.path.abspath(folder))}", "runs": runs}
    return _write_page(folder, out, "runs_data.js", data["title"], data)
