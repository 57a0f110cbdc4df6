"""The run report (jaxvis.report): the data it writes, and its pages opened in headless Chromium.

Run directories are made synthetically here (no engine run): a sweep through render.write_sweep /
render.write_chunk with made-up results, an interrupted sweep (some chunks only), a 2,000-point sweep
written as axes.json + results.jsonl, and saliency runs with per-detection records of two methods.
The browser tests use Debian's chromium and chromedriver through Selenium (``make test`` installs them)
and are skipped, with the reason, where they cannot be found.
"""

import json
import os
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from conftest import docs_module, run_module
from jaxvis import engine as eng
from jaxvis import objectives as O
from jaxvis import render, report
from jaxvis.spec import ModelSpec

LABELS = ("circle", "square", "triangle")
STEPS = 12
SNAPSHOTS = (0, 5, STEPS)


def toy_spec() -> ModelSpec:
    return ModelSpec(arch="toy_vgg", family="vgg", config={}, input_size=(32, 32), resize="squash", labels=LABELS)


def toy_sweep() -> eng.Sweep:
    return eng.Sweep(targets=[0, 1, 2], lrs=[0.1, 1.0], losses=[O.score(), O.score() + O.sq()], seeds=[0, 1])


def fake_result(sl: slice, rng) -> eng.Result:
    """Made-up results for the points of ``sl``: distinct probabilities and scores, point 5 diverged."""
    n = sl.stop - sl.start
    idx = np.arange(sl.start, sl.stop)
    images = rng.normal(0, 0.5, (n, 32, 32, 3)).astype(np.float32)
    snaps = {k: (images * k / STEPS).astype(np.float32) for k in SNAPSHOTS}
    t = np.arange(STEPS, dtype=np.float32)[:, None]
    score = (t * (1 + idx[None] % 7)).astype(np.float32)
    loss = (-score + rng.normal(0, 0.1, (STEPS, n))).astype(np.float32)
    diverged = np.where(idx == 5, 7, -1)
    loss[7:, idx == 5] = np.nan
    prob = ((idx * 37) % 100 / 100.0).astype(np.float32)
    return eng.Result(images=images, snapshots=snaps, loss=loss, score=score, prob=np.tile(prob, (STEPS, 1)),
                      terms=np.zeros((STEPS, n, 2), np.float32), final_loss=loss[-1], final_score=score[-1] + idx,
                      final_prob=prob, diverged_step=diverged)


SETTINGS = {"steps": STEPS, "optimizer": "sgd", "display": "stretch"}
TERMS = ["score", "sq"]


def chunk_slices(n: int, size: int) -> list[slice]:
    return [slice(lo, min(lo + size, n)) for lo in range(0, n, size)]


def make_sweep(path, chunks_done=None) -> str:
    """A sweep's run directory: finished (all chunks, through write_sweep) or, with ``chunks_done``, an
    interrupted one (the report started, only those chunks written)."""
    spec, sweep = toy_spec(), toy_sweep()
    rng = np.random.default_rng(0)
    slices = chunk_slices(sweep.size, 8)
    results = [(sl, fake_result(sl, rng)) for sl in slices]
    run_config = {"steps": STEPS, "snapshots": list(SNAPSHOTS), "chunk_size": 8, "n_chunks": len(slices)}
    render.start_report(str(path), spec, sweep, TERMS, SETTINGS, run_config)
    if chunks_done is not None:
        for c in chunks_done:
            render.write_chunk(str(path), spec, sweep, TERMS, c, *results[c])
        return report.write_sweep_page(str(path))
    return render.write_sweep(str(path), spec, sweep, iter(results), TERMS, SETTINGS)


def make_big_sweep(path, n_targets=10, n_lrs=10, n_seeds=20) -> str:
    """A 2,000-point sweep written as its data files (axes.json, results.jsonl) over a few shared PNGs."""
    spec = toy_spec()
    spec = ModelSpec(**{**spec.__dict__, "labels": tuple(f"class{i}" for i in range(n_targets))})
    sweep = eng.Sweep(targets=list(range(n_targets)), lrs=[10.0 ** (k / 3 - 2) for k in range(n_lrs)],
                      losses=[O.score()], seeds=list(range(n_seeds)))
    os.makedirs(path / "points", exist_ok=True)
    rng = np.random.default_rng(1)
    for k in range(8):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path / "points" / f"p{k}.png")
    report.write_axes(str(path), report.sweep_axes(spec, sweep, ["score"], SETTINGS, {"steps": STEPS}))
    axes = sweep.axes()
    with open(path / "results.jsonl", "w") as f:
        for i, p in enumerate(sweep.point_axes()):
            file = f"points/p{i % 8}.png"
            # records of the size the library writes (every key of render.write_chunk's records)
            f.write(json.dumps({
                "index": i, "file": file, "files": {"stretch": file, "clip": file}, "display": "stretch",
                "snapshots": [[k, file] for k in SNAPSHOTS], "curve_png": file, "chunk": i // 100,
                "label": render.point_label(sweep, p, spec, ["target", "lr", "seed"]), "at": report.point_at(p, axes),
                "target": p["target"], "target_name": spec.labels[p["target"]], "lr": p["lr"], "seed": p["seed"],
                "loss": p["loss"], "weights": {"score": 1.0}, "init": p["init"], "boxes": p["boxes"],
                "final_score": float(rng.normal()), "final_prob": float(rng.uniform()),
                "final_loss": float(rng.normal()), "diverged": False, "diverged_step": None}, sort_keys=True) + "\n")
    return report.write_sweep_page(str(path))


def make_saliency(path, images_dir) -> str:
    """A saliency run of a detector: one image, three explained detections under two methods (records as
    the launcher writes them, some keys absent), and a classifier record on a second image."""
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(2)
    sources = []
    for name, (h, w) in (("street.jpg", (60, 80)), ("field.png", (40, 40))):
        src = images_dir / name
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(src)
        sources.append((str(src), h, w))
    records = []
    street, h, w = sources[0]
    for method in ("gradient", "odam"):
        for rank in (2, 0, 1):                           # written out of order: the page orders by rank
            m = f"street_{method}_{rank}.npy"
            np.save(path / m, rng.random((h, w)).astype(np.float32))
            records.append({"image": street, "target": f"car #{rank}", "kind": "detection", "score": 1.5 - rank,
                            "method": method, "map": m, "detection": rank, "label": "car", "det_score": 0.9 - 0.2 * rank,
                            "box": [10.0 + rank, 10.0, 40.0, 50.0], "derived_box": [12.0, 8.0, 44.0, 52.0] if rank else None,
                            "gt_box": [11.0, 9.0, 41.0, 49.0], "metrics": {"pointing_hit": rank != 2}})
    field, h, w = sources[1]
    np.save(path / "field.npy", rng.random((h, w)).astype(np.float32))
    records.append({"image": field, "target": "goose", "map": "field.npy", "score": 3.0})   # minimal record
    np.save(path / "gone.npy", rng.random((30, 20)).astype(np.float32))
    records.append({"image": str(images_dir / "moved_away.png"), "map": "gone.npy"})        # its image is gone
    with open(path / "results.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return report.write_saliency(str(path))


def read(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


# ---------------------------------------------------------------------------------------------------
# The data, without a browser.

def test_sweep_data_files(tmp_path):
    index = make_sweep(tmp_path / "run")
    run = tmp_path / "run"
    assert index == str(run / "index.html")
    axes = json.loads((run / "axes.json").read_text())
    assert axes["n_points"] == 24 and axes["varying"] == ["target", "lr", "loss", "seed"]
    assert [a["labels"] for a in axes["axes"]][:3] == [list(LABELS), ["lr=0.1", "lr=1"], ["score", "score+sq"]]
    records = read(run / "results.jsonl")
    values = {a["name"]: a["values"] for a in axes["axes"]}
    for r in records:
        for name, k in r["at"].items():
            assert values[name][k] == r[name if name != "boxes" else "boxes"]
        for rel in list(r["files"].values()) + [s[1] for s in r["snapshots"]] + [r["curve_png"]]:
            assert (run / rel).stat().st_size > 0
    assert [s[0] for s in records[0]["snapshots"]] == list(SNAPSHOTS)
    assert records[5]["diverged"] and records[5]["diverged_step"] == 7
    # the page's data are those records; the curves for the detail view come per chunk
    text = (run / "report" / "data.js").read_text()
    assert text.startswith("window.JAXVIS_DATA = ")
    data = json.loads(text[len("window.JAXVIS_DATA = "):].rstrip().rstrip(";"))
    assert [p["index"] for p in data["points"]] == list(range(24)) and data["status"]["finished"]
    assert data["status"]["diverged"] == 1 and "grid_000.png" in data["figures"]
    curves = (run / "report" / "curves" / "00000.js").read_text()
    assert curves.startswith("JAXVIS_CURVES(0, ")
    c5 = json.loads(curves[len("JAXVIS_CURVES(0, "):].rstrip().rstrip(");"))["5"]
    assert len(c5["loss"]) == STEPS and c5["loss"][7:] == [None] * (STEPS - 7) and c5["diverged_step"] == 7


def test_partial_sweep_data(tmp_path):
    make_sweep(tmp_path / "run", chunks_done=[0, 2])
    records, finished = report.sweep_records(str(tmp_path / "run"), 24)
    assert not finished and [r["index"] for r in records] == list(range(8)) + list(range(16, 24))
    entry = report.describe_run(str(tmp_path / "run"))
    assert entry["status"]["text"] == "partial: 16 of 24 points, 1 diverged" and entry["points"] == 24


def test_grid_text_grows_with_the_cells():
    """The labels of a figure stay readable when its cells are large: the text scales with them."""
    def label_height(cell):
        # a white cell and a column label only: the dark pixels are the label's
        im = render.grid([[np.full((8, 8, 3), 255, np.uint8)]], [""], ["Label"], cell=cell)
        dark = np.where((im[:, :, 0] < 128).any(axis=1))[0]
        return dark.max() - dark.min() + 1
    small, large = label_height(100), label_height(400)
    assert small >= 9 and large > 2 * small


# ---------------------------------------------------------------------------------------------------
# In the browser.

CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,900")


@pytest.fixture(scope="module")
def browser():
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]'); the report's browser tests need it")
    site = docs_module("check_site")   # it starts the browser for these tests as for the site's check
    if site.chromium_paths() is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (make test installs them with apt-get)")
    driver, profile = site.browser(CHROMIUM_ARGS)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def open_page(driver, path):
    """Loads a page from disk (file://, the browser's default security) and waits for it to be drawn."""
    driver.get_log("browser")                                   # drop what earlier pages logged
    driver.get("about:blank")
    driver.get("file://" + os.path.abspath(path))
    deadline = time.time() + 15
    while time.time() < deadline:
        if driver.execute_script("return !!(window.JAXVIS && window.JAXVIS.ready !== null)"):
            return driver.execute_script("return window.JAXVIS.ready")
        time.sleep(0.05)
    raise AssertionError(f"{path} never became ready; console: {driver.get_log('browser')}")


def errors(driver):
    """Console errors (SEVERE: script errors and failed loads) since the last call."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def all_images_loaded(driver):
    """Scrolls through the page, a screen at a time, so that every lazy image loads; returns the sources
    of the images that did not load (broken, or still pending after a few seconds)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    screen = driver.execute_script("return window.innerHeight")
    for y in list(range(0, height, screen)) + [height]:
        driver.execute_script("window.scrollTo(0, arguments[0])", y)
        deadline = time.time() + 5
        while driver.execute_script("return Array.from(document.images).some("
                                    "i => !i.complete && i.getBoundingClientRect().top < window.innerHeight"
                                    " && i.getBoundingClientRect().bottom > 0)") and time.time() < deadline:
            time.sleep(0.02)
    driver.execute_script("window.scrollTo(0, 0)")
    return driver.execute_script(
        "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
        ".concat(window.JAXVIS.brokenSrc)")


def visible_tiles(driver):
    return [int(v) for v in driver.execute_script(
        "return Array.from(document.querySelectorAll('#tiles .tile')).map(t => t.dataset.index)")]


def choose(driver, select_id, value):
    driver.execute_script(
        "const s = document.getElementById(arguments[0]); s.value = arguments[1];"
        "s.dispatchEvent(new Event('change'));", select_id, str(value))


def go(driver, hash_, view=None):
    """Sets the page's hash and waits for the page to draw ``view`` (default: the sweep page's view of that
    hash)."""
    driver.execute_script("location.hash = arguments[0]", hash_)
    view = view or hash_.lstrip("#").split("=")[0].replace("point", "detail")
    for _ in range(100):
        if driver.execute_script("return document.getElementById('view').dataset.view") == view:
            return
        time.sleep(0.02)
    raise AssertionError(f"the page did not switch to {hash_}")


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "sweep"
    make_sweep(path)
    return path


def test_sweep_page_loads_clean(browser, sweep_run):
    open_page(browser, sweep_run / "index.html")
    assert all_images_loaded(browser) == []
    assert errors(browser) == []
    assert visible_tiles(browser) == list(range(24))
    assert browser.find_element("id", "count").text.startswith("24 of 24 points")
    # hovering a tile shows its values
    from selenium.webdriver.common.action_chains import ActionChains
    ActionChains(browser).move_to_element(browser.find_element("css selector", ".tile[data-index='5']")).perform()
    tip = browser.find_element("id", "tip").text
    assert "#5" in tip and "diverged: at step 7" in tip and "lr: lr=1" in tip and "final loss: –" in tip


def test_filters_show_exactly_the_matching_points(browser, sweep_run):
    records = read(sweep_run / "results.jsonl")
    open_page(browser, sweep_run / "index.html")
    choose(browser, "filter-lr", 1)                              # lr = 1
    assert visible_tiles(browser) == [r["index"] for r in records if r["lr"] == 1.0]
    choose(browser, "filter-seed", 0)                            # combined with seed 0
    assert visible_tiles(browser) == [r["index"] for r in records if r["lr"] == 1.0 and r["seed"] == 0]
    choose(browser, "filter-lr", "all")
    assert visible_tiles(browser) == [r["index"] for r in records if r["seed"] == 0]
    assert errors(browser) == []


def test_sorting_orders_the_tiles(browser, sweep_run):
    records = read(sweep_run / "results.jsonl")
    open_page(browser, sweep_run / "index.html")
    choose(browser, "sort", "prob")
    expected = [r["index"] for r in sorted(records, key=lambda r: (-r["final_prob"], r["index"]))]
    assert visible_tiles(browser) == expected
    shown = [records[i]["final_prob"] for i in visible_tiles(browser)]
    assert shown == sorted(shown, reverse=True) and len(set(shown)) > 10
    choose(browser, "sort", "divergence")
    assert visible_tiles(browser)[0] == 5                        # the one diverged point first
    browser.find_element("id", "reverse").click()
    choose(browser, "sort", "score")
    assert visible_tiles(browser) == [r["index"] for r in sorted(records, key=lambda r: (r["final_score"], r["index"]))]


def test_compare_view_shows_the_chosen_axes(browser, sweep_run):
    records = read(sweep_run / "results.jsonl")
    open_page(browser, sweep_run / "index.html")
    choose(browser, "filter-target", 2)
    choose(browser, "filter-seed", 1)
    go(browser, "#compare")
    choose(browser, "rows", "lr")
    choose(browser, "cols", "loss")
    table = browser.find_element("id", "compare")
    assert table.get_attribute("data-rows") == "lr" and table.get_attribute("data-cols") == "loss"
    assert [th.text for th in table.find_elements("css selector", "th.col")] == ["score", "score+sq"]
    assert [th.text for th in table.find_elements("css selector", "th.row")] == ["lr=0.1", "lr=1"]
    cells = browser.execute_script(
        "return Array.from(document.querySelectorAll('#compare tbody tr')).map("
        "tr => Array.from(tr.querySelectorAll('td a')).map(a => Number(a.dataset.index)))")
    for i, row in enumerate(cells):
        for j, index in enumerate(row):
            r = records[index]
            assert (r["at"]["lr"], r["at"]["loss"], r["target"], r["seed"]) == (i, j, 2, 1)
    assert sum(map(len, cells)) == 4
    # the display mode switches every image between the stretched and the clipped PNG
    browser.find_element("id", "mode-clip").click()
    sources = browser.execute_script("return Array.from(document.querySelectorAll('#compare img')).map(i => i.src)")
    assert sources and all(s.endswith("_clip.png") for s in sources)
    assert all_images_loaded(browser) == [] and errors(browser) == []


def test_detail_view_draws_the_curves(browser, sweep_run):
    open_page(browser, sweep_run / "index.html")
    go(browser, "#point=5")
    for _ in range(100):
        lines = browser.find_elements("css selector", "#charts svg polyline")
        if lines:
            break
        time.sleep(0.05)
    assert len(lines) == 2                                       # loss (finite up to the divergence) and score
    loss_points = lines[0].get_attribute("points").split()
    score_points = lines[1].get_attribute("points").split()
    assert len(loss_points) == 7 and len(score_points) == STEPS
    assert len(browser.find_elements("css selector", "#charts svg line.mark")) == 2
    assert len(browser.find_elements("css selector", "#strip img")) == len(SNAPSHOTS) + 1
    assert "diverged" in browser.find_element("id", "detail").text
    assert all_images_loaded(browser) == [] and errors(browser) == []
    # the arrow keys step to the neighbours in the current order
    from selenium.webdriver.common.keys import Keys
    browser.find_element("tag name", "body").send_keys(Keys.ARROW_RIGHT)
    shown = None
    for _ in range(100):
        shown = browser.execute_script("const d = document.getElementById('detail'); return d && d.dataset.index")
        if shown == "6":
            break
        time.sleep(0.02)
    assert shown == "6" and browser.execute_script("return location.hash") == "#point=6"


def test_two_thousand_points_are_interactive_within_two_seconds(browser, tmp_path):
    make_big_sweep(tmp_path / "big")
    ready = open_page(browser, tmp_path / "big" / "index.html")
    assert len(visible_tiles(browser)) == 2000
    took = browser.execute_script(
        "const t = performance.now(); const s = document.getElementById('filter-seed'); s.value = '3';"
        "s.dispatchEvent(new Event('change')); const n = document.querySelectorAll('#tiles .tile').length;"
        "return [performance.now() - t, n]")
    assert took[1] == 100
    assert ready + took[0] < 2000, f"ready after {ready:.0f} ms, a filter took {took[0]:.0f} ms"
    assert all_images_loaded(browser) == [] and errors(browser) == []


@pytest.fixture(scope="module")
def saliency_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("saliency")
    make_saliency(root / "sal", root)
    return root / "sal"


def test_saliency_page(browser, saliency_run):
    open_page(browser, saliency_run / "index.html")
    assert all_images_loaded(browser) == [] and errors(browser) == []
    assert browser.find_element("id", "count").text == "8 maps shown"
    # a map whose image is gone is shown alone, at full opacity, in the map's shape
    gone = browser.find_element("css selector", "section.image-group[data-image='2'] figure.card:not(.source)")
    assert [i.get_attribute("class") for i in gone.find_elements("css selector", ".stack img")] == ["heat"]
    assert gone.find_element("css selector", "img.heat").value_of_css_property("opacity") == "1"
    assert gone.find_element("css selector", ".stack").get_attribute("style").replace(" ", "") == "aspect-ratio:20/30;"
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('.method-row')).map(r => [r.dataset.method,"
        " Array.from(r.querySelectorAll('figure.card:not(.source) strong')).map(s => s.textContent)])")
    assert rows[:2] == [["gradient", ["car (detection 0)", "car (detection 1)", "car (detection 2)"]],
                        ["odam", ["car (detection 0)", "car (detection 1)", "car (detection 2)"]]]
    # the boxes: explained, derived (absent for detection 2) and ground truth, in image pixels
    first = browser.find_element("css selector", ".method-row figure.card:not(.source)")
    assert len(first.find_elements("css selector", "rect.explained")) == 1
    assert first.find_element("css selector", "rect.gt").get_attribute("x") == "11"
    choose(browser, "filter-method", "odam")
    assert browser.execute_script(
        "return Array.from(document.querySelectorAll('figure.card:not(.source)')).map(c => c.dataset.method)") == ["odam"] * 3
    slider = browser.find_element("id", "opacity")
    browser.execute_script("arguments[0].value = 0.25; arguments[0].dispatchEvent(new Event('input'))", slider)
    opacities = browser.execute_script("return Array.from(document.querySelectorAll('img.heat')).map(i => i.style.opacity)")
    assert opacities == ["0.25"] * 3                            # the odam maps of the street scene
    assert errors(browser) == []


def test_saliency_launcher_writes_the_page(browser, tmp_path):
    from jaxvis import assets
    image = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "s"
    run_module("experiments.saliency", "--params", assets.path("classifier"), "--image", str(image), "--top_k", "2",
               "--out", str(out))
    open_page(browser, out / "index.html")
    assert all_images_loaded(browser) == [] and errors(browser) == []
    assert browser.find_element("id", "count").text == "2 maps shown"


def test_folder_page_with_a_partial_run(browser, tmp_path, saliency_run):
    runs = tmp_path / "runs"
    make_sweep(runs / "done")
    make_sweep(runs / "stopped", chunks_done=[0, 2])
    shutil.copytree(saliency_run, runs / "nested" / "sal")
    proc = run_module("experiments.report", str(runs))
    assert "3 run(s)" in proc.stdout and "stopped: class models, toy_vgg" in proc.stdout
    bad = run_module("experiments.report", str(runs / "missing"), check=False)
    assert bad.returncode != 0 and "is not a folder; give the folder that holds the run directories" in bad.stderr
    open_page(browser, runs / "runs.html")
    assert errors(browser) == []
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('#runs tr.run')).map(r => [r.dataset.path,"
        " Array.from(r.cells).map(c => c.textContent)])")
    table = {path: cells for path, cells in rows}
    assert set(table) == {"done", "stopped", "nested/sal"}
    assert table["done"][6] == "finished, 1 diverged" and table["done"][3] == "3 target × 2 lr × 2 loss × 2 seed"
    assert table["stopped"][6] == "partial: 16 of 24 points, 1 diverged" and table["stopped"][4] == "16 / 24"
    assert table["nested/sal"][1] == "saliency" and table["done"][2] == "toy_vgg"
    # each row links to its run's page; the interrupted run's page shows what is finished
    browser.find_element("link text", "stopped").click()
    for _ in range(100):
        if browser.execute_script("return !!(window.JAXVIS && window.JAXVIS.ready)"):
            break
        time.sleep(0.05)
    assert visible_tiles(browser) == list(range(8)) + list(range(16, 24))
    assert browser.find_element("id", "status").text == "partial: 16 of 24 points, 1 diverged"
    assert all_images_loaded(browser) == [] and errors(browser) == []


def test_interrupted_sweep_shows_its_finished_chunks_then_all(browser, tmp_path, monkeypatch):
    """A real sweep stopped after its first chunk: the page exists and shows that chunk's points; resumed,
    the page shows all of them."""
    from jaxvis import assets, sweeps
    from jaxvis.rundir import RunDir
    from jaxvis.settings import SweepSettings

    out = tmp_path / "run"
    settings = SweepSettings.create(model="shapes_vgg", params=assets.path("classifier"), categories="circle,star",
                                    lrs="0.1,1", steps=3, loss=["score"], snapshots="1,3", chunk_size=2)
    save = RunDir.save_chunk

    def stop_at_second(self, index, points, result):
        if index == 1:
            raise KeyboardInterrupt
        save(self, index, points, result)

    monkeypatch.setattr(RunDir, "save_chunk", stop_at_second)
    with pytest.raises(SystemExit):
        sweeps.run(settings, out, progress=False)
    assert not (out / "results.jsonl").exists()
    open_page(browser, out / "index.html")
    assert visible_tiles(browser) == [0, 1]
    assert browser.find_element("id", "status").text == "partial: 2 of 4 points"
    assert all_images_loaded(browser) == [] and errors(browser) == []
    # a chunk saved whose files were never written (the run killed in between) is on the page once resumed
    shutil.rmtree(out / "report" / "parts")
    assert not report.sweep_records(str(out), 4)[0]
    seen = []

    def look_at_the_page(self, index, points, result):
        seen.append(len(report.sweep_records(str(out), 4)[0]))
        save(self, index, points, result)

    monkeypatch.setattr(RunDir, "save_chunk", look_at_the_page)
    sweeps.run(settings, out, resume=True, progress=False)
    assert seen == [2]
    open_page(browser, out / "index.html")
    assert visible_tiles(browser) == [0, 1, 2, 3]
    assert browser.find_element("id", "status").text == "finished"
    assert all_images_loaded(browser) == [] and errors(browser) == []


def test_page_works_over_http(browser, sweep_run):
    """The same page from a static web server (python -m http.server)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(sweep_run))

    class Quiet(handler.func):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(sweep_run)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        browser.get_log("browser")
        browser.get(f"http://127.0.0.1:{server.server_address[1]}/index.html#point=3")
        for _ in range(200):
            if browser.find_elements("css selector", "#charts svg polyline"):
                break
            time.sleep(0.05)
        assert len(browser.find_elements("css selector", "#charts svg polyline")) == 2
        assert all_images_loaded(browser) == [] and errors(browser) == []
    finally:
        server.shutdown()
        server.server_close()
