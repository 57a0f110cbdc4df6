"""The atlas: build_atlas on a tiny model, its files and page in Chromium, a 512-channel page's speed, the
folder page's entry, and the launcher's refusals."""

import json
import os

import numpy as np
import pytest

from conftest import run_module
from jaxvis import features as ft
from jaxvis import report
from test_report import browser, errors, go, open_page  # noqa: F401 (browser is a fixture)
from tiny import tiny_vgg


@pytest.fixture(scope="module")
def tiny_atlas(tmp_path_factory):
    vgg = tiny_vgg(2)
    rng = np.random.default_rng(0)
    images = rng.random((12, 64, 64, 3)).astype(np.float32)
    masks = np.full((12, 64, 64), -1, np.int32)
    masks[:, 10:30, 10:40] = np.arange(12)[:, None, None] % 3
    data = ft.Dataset(images, np.arange(12) % 3, masks=masks, names=[f"im{i}.png" for i in range(12)],
                      classes=vgg.spec.labels, skipped=["bad.png: not an image"])
    held = ft.Dataset(images[:6], np.arange(6) % 3, classes=vgg.spec.labels)
    # no pictures here (the engine's compilation is the slow launcher test's): the 512-channel page has them
    atlas = ft.build_atlas(vgg, data, "conv4_2", held_out=held, k=4, random_sets=5, top=0.05, patches=3, steps=0)
    out = tmp_path_factory.mktemp("atlas")
    return vgg, atlas, out, report.write_atlas(str(out), atlas)


def test_the_atlas_document_and_files(tiny_atlas):
    vgg, atlas, out, page = tiny_atlas
    doc = json.loads((out / "atlas.json").read_text())
    assert doc["layer"] == "conv4_2" and doc["channels"] == 32 and list(doc["classes"]) == ["class0", "class1", "class2"]
    for name, order in doc["classes"].items():
        assert sorted(order) == list(range(32))
        drops = doc["importance"][name]["ablation"]
        assert [drops[c] for c in order] == sorted(drops, reverse=True)
    assert set(doc["faithfulness"]["classes"]) == {"class0", "class1", "class2"}
    assert len(doc["dissection"]["labels"]) == 32 and doc["dissection"]["classes"][:3] == ["class0", "class1", "class2"]
    assert not (out / "pictures.npy").exists() and "visualisation" not in doc
    assert np.load(out / "patches.npy").shape[:2] == (32, 3)
    assert doc["patches"]["names"][0][0].startswith("im") and doc["skipped"] == ["bad.png: not an image"]
    assert os.path.exists(page) and (out / "report" / "atlas_patches.png").exists()


def test_the_atlas_page_in_chromium(browser, tiny_atlas):  # noqa: F811
    _, atlas, out, page = tiny_atlas
    open_page(browser, page)
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('.class-row')).map(r => [r.dataset.class, "
        "Array.from(r.querySelectorAll('.channel')).map(t => +t.dataset.channel)])")
    assert [r[0] for r in rows] == list(atlas.doc["classes"])
    assert all(r[1] == atlas.doc["classes"][r[0]][:8] for r in rows)
    assert browser.execute_script("return document.querySelectorAll('#faithfulness tr').length") == 4
    assert browser.execute_script("return document.querySelectorAll('.class-row .sprite[data-sheet=patches]').length")
    assert "1 thing(s) were left out" in browser.find_element("id", "skipped").text
    go(browser, "#channels", "channels")
    browser.execute_script("const s = document.getElementById('sort'); s.value = 'class:class1';"
                           "s.dispatchEvent(new Event('change'))")
    shown = browser.execute_script("return Array.from(document.querySelectorAll('#tiles .channel'))"
                                   ".map(t => +t.dataset.channel)")
    drops = atlas.doc["importance"]["class1"]["ablation"]
    assert sorted(shown) == list(range(32)) and [drops[c] for c in shown] == sorted(drops, reverse=True)
    go(browser, "#channel=5", "detail")
    assert browser.find_element("id", "detail").get_attribute("data-channel") == "5"
    assert browser.execute_script("return document.querySelectorAll('#patches figure').length") == 3
    assert browser.execute_script("return document.querySelectorAll('#per-class tr').length") == 4
    assert errors(browser) == []


def test_a_512_channel_atlas_is_interactive_within_two_seconds(browser, tmp_path):  # noqa: F811
    rng = np.random.default_rng(1)
    c, classes = 512, [f"class{i}" for i in range(20)]
    doc = {"format": 1, "kind": "atlas", "layer": "conv5_3", "model": "vgg16", "channels": c, "rank_by": "ablation",
           "images": 500, "skipped": [], "mean_activation": rng.random(c).tolist(),
           "classes": {n: rng.permutation(c).tolist() for n in classes},
           "importance": {n: {"count": 10, "contribution": rng.random(c).tolist(), "ablation": rng.random(c).tolist()}
                          for n in classes},
           "patches": {"side": 32, "where": np.zeros((c, 4, 3), int).tolist(), "values": rng.random((c, 4)).tolist(),
                       "names": [["a.png"] * 4] * c},
           "visualisation": {"seeds": [0, 1], "steps": 10, "activation": rng.random((c, 2)).tolist()}}
    pictures = rng.random((c, 2, 64, 64, 3)).astype(np.float32)
    patches = rng.random((c, 4, 32, 32, 3)).astype(np.float32)
    page = report.write_atlas(str(tmp_path), ft.Atlas(doc, pictures, patches))
    ready = open_page(browser, page)
    assert browser.execute_script("return document.querySelectorAll('.class-row .sprite[data-sheet=pictures]').length")
    go(browser, "#channels", "channels")
    took = browser.execute_script(
        "const t = performance.now(); const s = document.getElementById('sort'); s.value = 'class:class7';"
        "s.dispatchEvent(new Event('change')); const n = document.querySelectorAll('#tiles .channel').length;"
        "return [performance.now() - t, n]")
    assert took[1] == c
    assert ready + took[0] < 2000, f"ready after {ready:.0f} ms, a sort took {took[0]:.0f} ms"
    go(browser, "#channel=511", "detail")
    assert browser.execute_script("return document.querySelectorAll('#pictures figure').length") == 2
    assert errors(browser) == []


def test_the_folder_page_lists_an_atlas(tiny_atlas):
    _, _, out, _ = tiny_atlas
    runs = report.list_runs(str(out))
    assert [r["kind"] for r in runs] == ["atlas"] and runs[0]["link"] == "index.html"
    assert runs[0]["grid"] == "conv4_2: 32 channels x 3 classes"


def test_the_launcher_refuses_bad_input_in_one_line(tmp_path):
    from jaxvis import assets

    params = assets.path("classifier")
    for args, message in (
            (["--layer", "conv9_9"], "no convolutional activation 'conv9_9'"),
            (["--layer", "conv5_2", "--dataset", "nowhere:x"], "--dataset 'nowhere:x' is none of the accepted forms")):
        r = run_module("experiments.atlas", "--params", params, "--out", str(tmp_path / "a"), *args, check=False)
        assert r.returncode == 1 and message in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "a" / "atlas.json").exists()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "atlas.json").write_text("{}")
    r = run_module("experiments.atlas", "--params", params, "--layer", "conv5_2", "--out", str(tmp_path / "b"),
                   check=False)
    assert r.returncode == 1 and "already holds atlas.json" in r.stderr


@pytest.mark.slow
def test_the_launcher_writes_an_atlas_of_the_shipped_classifier(tmp_path):
    from jaxvis import assets

    out = tmp_path / "atlas"
    r = run_module("experiments.atlas", "--params", assets.path("classifier"), "--layer", "conv5_2", "--images", "60",
                   "--held_out", "60", "--steps", "8", "--seeds", "0", "--out", str(out))
    doc = json.loads((out / "atlas.json").read_text())
    assert list(doc["classes"]) == ["circle", "square", "triangle", "star", "cross", "ring"]
    assert "Open" in r.stdout and (out / "index.html").exists()
    assert all(v["ratio"] >= 3 for v in doc["faithfulness"]["classes"].values()), doc["faithfulness"]
