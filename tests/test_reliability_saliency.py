"""experiments.saliency under unusual input: bounded work per image, output names that never collide or
overwrite, and one line for each bad input with nothing left behind."""

import json
import os
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from conftest import run_module
from jaxvis import fileio, localize as loc
from jaxvis import images as image_io


def blob_image(h, w, box):
    """A grey image with a red rectangle ``box`` (x1, y1, x2, y2), and a saliency map peaked on it."""
    image = np.full((h, w, 3), 0.5, np.float32)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = (0.9, 0.1, 0.1)
    yy, xx = np.mgrid[:h, :w]
    cx, cy, s = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 3
    return image, np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s ** 2)).astype(np.float32)


def test_grabcut_works_on_a_bounded_number_of_pixels_and_the_box_comes_back_in_image_pixels(monkeypatch):
    import cv2

    seen = []
    real = cv2.grabCut

    def spy(img, mask, *args):
        seen.append(img.shape[:2])
        return real(img, mask, *args)

    monkeypatch.setattr(cv2, "grabCut", spy)
    image, m = blob_image(900, 1400, (500, 300, 800, 600))
    found = loc.localize(image, m)
    (h, w), = seen
    assert h * w <= loc.MAX_PIXELS and abs(w / h - 1400 / 900) < 0.01
    assert found.mask.shape == (900, 1400)
    x1, y1, x2, y2 = found.box
    scale = 1400 / w  # one pixel of the reduced image, in the image's pixels
    assert abs(x1 - 500) <= 2 * scale and abs(y1 - 300) <= 2 * scale
    assert abs(x2 - 800) <= 2 * scale and abs(y2 - 600) <= 2 * scale
    small, ms = blob_image(120, 160, (40, 30, 100, 80))
    loc.localize(small, ms)
    assert seen[-1] == (120, 160)  # small images are segmented as they are


def test_a_grabcut_that_does_not_finish_gives_no_box_and_says_why(monkeypatch):
    import cv2

    monkeypatch.setattr(cv2, "grabCut", lambda *args: time.sleep(3))
    image, m = blob_image(60, 80, (20, 20, 50, 40))
    start = time.monotonic()
    found = loc.localize(image, m, timeout=0.2)
    assert time.monotonic() - start < 2.5  # the caller did not wait for the cut
    assert found.box is None and found.mask.shape == (60, 80) and not found.mask.any()
    assert "did not finish within 0.2 s" in found.note


def test_output_stems_keep_names_apart_and_unused_name_never_reuses_a_file(tmp_path):
    assert image_io.file_stem("a/b/photo.png") == "photo"
    stems = {image_io.file_stem(p) for p in ("圆.png", "方.png", "x y.png", "x_y.png")}
    assert len(stems) == 4 and all(s == image_io.safe_name(s) for s in stems)
    (tmp_path / "m.npy").write_bytes(b"")
    (tmp_path / "m-2.png").write_bytes(b"")
    assert fileio.unused_name(str(tmp_path), "m", (".npy", ".png")) == "m-3"
    assert fileio.unused_name(str(tmp_path), "n", (".npy",), taken={"n"}) == "n-2"


def test_memory_is_stated_for_large_images_and_too_large_ones_are_refused(monkeypatch):
    import jaxvis.engine
    from jaxvis import saliency as sal

    monkeypatch.setattr(jaxvis.engine, "available_memory", lambda device: 8 * 2**30)
    with pytest.raises(sal.SaliencyError, match=r"big.png is 7000x7000 \(49.0 megapixels\).*downscale it to at most "
                                                r"16.0 megapixels"):
        sal.check_image_memory(["/x/big.png"], [(7000, 7000)])
    notes = sal.check_image_memory(["/x/mid.png"], [(3000, 3000)])
    assert notes == ["mid.png is 3000x3000: its maps and pictures at full resolution take about 2.4 GB of memory "
                     "(8.6 GB free)."]
    assert sal.check_image_memory(["/x/small.png"], [(480, 640)]) == []


def test_non_finite_images_and_noise_are_refused_before_any_work():
    from jaxvis import saliency as sal
    from tiny import tiny_ssd, tiny_vgg

    model = tiny_vgg(0)
    images = np.full((1, 32, 32, 3), 0.5, np.float32)
    images[0, 3, 4, 1] = np.nan
    with pytest.raises(sal.SaliencyError, match="1 NaN or infinite value"):
        sal.explain(model, images, sal.class_score(np.array([[1]])))
    ssd = tiny_ssd(0)
    with pytest.raises(sal.SaliencyError, match="cell of 400 pixels is larger than the 120x90 image"):
        sal.explain(ssd, np.full((1, 90, 120, 3), 0.5, np.float32), sal.detection([[0]], [[1]]), sal.drise(cell=400))
    for noise in (float("nan"), float("inf"), -0.1):
        with pytest.raises(sal.SaliencyError, match="smoothgrad's noise is a standard deviation"):
            sal.smoothgrad(noise=noise)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("names")
    rng = np.random.default_rng(0)
    for sub in ("one", "two"):
        (folder / sub).mkdir()
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / sub / "x.png")
    for name in ("圆.png", "方.png"):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / name)
    # a large flat image: GrabCut stalled on these at full resolution
    Image.fromarray(np.full((600, 600, 3), 128, np.uint8)).save(folder / "flat.png")
    Image.fromarray(np.full((30, 30), np.nan, np.float32)).save(folder / "nan.tiff")
    return folder


@pytest.mark.slow  # two launcher runs; the launcher's refusals stay
def test_outputs_never_collide_and_a_second_run_adds_under_new_names(tiny_files, images, tmp_path):
    vgg = str(tiny_files[0])
    out = tmp_path / "s"
    paths = [images / "one" / "x.png", images / "two" / "x.png", images / "圆.png", images / "方.png"]
    run_module("experiments.saliency", "--params", vgg, *[a for p in paths for a in ("--image", str(p))],
               "--category", "1", "--out", str(out))
    first = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["image"] for r in first] == [str(p) for p in paths]
    files = {r["map"] for r in first} | {r["png"] for r in first}
    assert len(files) == 2 * len(paths)
    kept = {name: (out / name).read_bytes() for name in files}
    assert np.load(out / first[0]["map"]).shape == (48, 64)
    run_module("experiments.saliency", "--params", vgg, "--image", str(paths[0]), "--category", "1",
               "--method", "grad_x_input", "--localize=false", "--out", str(out))
    both = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert both[:len(first)] == first and both[-1]["method"] == "grad_x_input"
    assert both[-1]["map"] not in files and both[-1]["png"] not in files
    assert {name: (out / name).read_bytes() for name in files} == kept  # the first run's files are untouched


@pytest.mark.slow  # the launcher on a 600x600 image (8 s); the bounded GrabCut test above stays in the default suite
def test_a_large_flat_image_gets_its_map_and_box_from_the_launcher(tiny_files, images, tmp_path):
    out = tmp_path / "s"
    run_module("experiments.saliency", "--params", str(tiny_files[0]), "--image", str(images / "flat.png"),
               "--category", "1", "--out", str(out))
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert np.load(out / record["map"]).shape == (600, 600)
    assert record["derived_box"] is None or len(record["derived_box"]) == 4


@pytest.mark.parametrize("args,message", [
    (["--image", "{images}/nan.tiff", "--category", "1"], "holds 900 NaN or infinite pixel value(s) of 900"),
    (["--image", "{images}/one/x.png", "--category", "1", "--method", "smoothgrad", "--noise", "nan"],
     "smoothgrad's noise is a standard deviation"),
    (["--image", "{images}/one/x.png", "--image", "{images}/nan.tiff", "--category", "1"], "NaN or infinite"),
    (["--params", "{ssd}", "--image", "{images}/one/x.png", "--detection", "abc"],
     "--detection takes ranks in each image's detections, whole numbers from 0"),
    (["--image", "{images}/one/x.png", "--top_k", "11"], "top_k takes a number of classes from 1 to 10"),
    (["--image", "{images}/one/x.png", "--top_k", "2", "--category", "1"], "give --category or --top_k, not both"),
    (["--image", "{images}/one/x.png", "--category", "1", "--masks", "5", "--steps", "3"],
     "--steps, --masks are not read by --method gradient, so they would do nothing"),
    (["--image", "{images}/one/x.png", "--category", "1", "--method", "integrated", "--algorithm", "fast"],
     "--algorithm is not read by --method integrated, so it would do nothing: drop it, or choose the method that "
     "reads it (xrai)"),
])
def test_bad_input_is_one_line_and_leaves_no_output(tiny_files, images, tmp_path, args, message):
    args = [a.format(images=images, ssd=tiny_files[1]) for a in args]
    params = [] if "--params" in args else ["--params", str(tiny_files[0])]
    out = tmp_path / "s"
    proc = run_module("experiments.saliency", *params, *args, "--out", str(out), check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert not out.exists()


def test_a_second_writer_on_one_out_is_refused(tiny_files, images, tmp_path):
    out = tmp_path / "s"
    holder = fileio.DirLock(str(out))
    try:
        proc = run_module("experiments.saliency", "--params", str(tiny_files[0]), "--image",
                          str(images / "one" / "x.png"), "--category", "1", "--out", str(out), check=False)
    finally:
        holder.release()
    assert proc.returncode == 1 and "is in use by another run" in proc.stderr.strip().splitlines()[-1]
    assert os.listdir(out) == [".lock"]
    shutil.rmtree(out)


def test_ctrl_c_ends_a_launcher_at_once_with_130_and_one_line():
    import subprocess
    import sys

    from conftest import ROOT

    code = "from experiments import _launch; _launch.exit_interrupted('interrupted: kept what was finished.')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130 and proc.stderr.strip() == "interrupted: kept what was finished."
