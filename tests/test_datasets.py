"""The dataset readers of jaxvis.datasets (a folder, COCO instances, Pascal VOC) on tiny files written here,
their hostile inputs, and cli.dataset."""

import json
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import jaxvis
from jaxvis import cli
from jaxvis import datasets as D


@pytest.fixture(scope="module")
def detector():
    return jaxvis.load(jaxvis.assets.path("detector"))   # __background__, circle, square, ...; 128x128


@pytest.fixture(scope="module")
def classifier():
    return jaxvis.load(jaxvis.assets.path("classifier"))  # circle, square, ...; 64x64


def _png(path, w, h, colour=(255, 0, 128)):
    Image.fromarray(np.full((h, w, 3), colour, np.uint8)).save(path)


def _nearest(full, size):
    """The expected nearest-neighbour resize: output pixel i reads input pixel floor((i + 0.5) * h / H)."""
    h, w = full.shape
    rows = np.floor((np.arange(size[0]) + 0.5) * h / size[0]).astype(int)
    cols = np.floor((np.arange(size[1]) + 0.5) * w / size[1]).astype(int)
    return full[np.ix_(rows, cols)]


def _rect(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _coco(tmp_path, annotations, images=None, categories=None):
    """Writes a.png (50x40) and b.png (30x60) and a COCO JSON; returns (json path, image folder)."""
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    _png(folder / "a.png", 50, 40)
    _png(folder / "b.png", 30, 60, (0, 255, 0))
    images = images if images is not None else [{"id": 2, "file_name": "b.png", "width": 30, "height": 60},
                                                {"id": 1, "file_name": "a.png", "width": 50, "height": 40}]
    categories = categories if categories is not None else [{"id": 1, "name": "Circle"}, {"id": 2, "name": "square"},
                                                            {"id": 9, "name": "person"}]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return str(path), str(folder)


def _ann(id_, image_id, cat, bbox, segmentation=None, **extra):
    out = {"id": id_, "image_id": image_id, "category_id": cat, "bbox": bbox, **extra}
    if segmentation is not None:
        out["segmentation"] = segmentation
    return out


# the square (area 200) first in the file, the circle inside it (area 20) after: the circle is drawn over it
SCENE = [_ann(1, 1, 2, [10, 5, 20, 10], _rect(10, 5, 30, 15)),
         _ann(2, 1, 1, [15, 8, 5, 4], _rect(15, 8, 20, 12)),
         _ann(3, 1, 9, [0, 0, 5, 5], _rect(0, 0, 5, 5)),      # person: not a class of the models
         _ann(4, 2, 1, [0, 0, 30, 60])]                       # no segmentation


def _scene_mask(size, with_a=True):
    full = np.full((40, 50), -1, np.int32)
    if with_a:
        full[5:15, 10:30] = 2   # the detector's square
        full[8:12, 15:20] = 1   # its circle, drawn over the square
    return _nearest(full, size)


def test_coco_detector_boxes_labels_masks(tmp_path, detector):
    json_path, folder = _coco(tmp_path, SCENE)
    data = D.coco(json_path, folder, detector)
    assert data.names == ["a.png", "b.png"] and data.classes == tuple(detector.spec.labels)
    assert data.images.shape == (2, 128, 128, 3) and data.images.dtype == np.float32
    colour = np.broadcast_to(np.array([255, 0, 128]) / 255, (128, 128, 3))
    np.testing.assert_allclose(data.images[0], colour, atol=1e-6)
    np.testing.assert_array_equal(data.labels, [[2, 1], [1, 0]])
    np.testing.assert_array_equal(data.valid, [[True, True], [True, False]])
    assert data.labels.dtype == np.int32 and data.boxes.dtype == np.float32 and data.valid.dtype == bool
    sx, sy = 128 / 50, 128 / 40   # a.png is 50 wide, 40 high
    want = [[10 * sx, 5 * sy, 30 * sx, 15 * sy], [15 * sx, 8 * sy, 20 * sx, 12 * sy]]   # square, then circle
    np.testing.assert_allclose(data.boxes[0], want, rtol=1e-6)
    np.testing.assert_allclose(data.boxes[0, 0], [25.6, 16.0, 76.8, 48.0], rtol=1e-6)
    np.testing.assert_allclose(data.boxes[1], [[0, 0, 128, 128], [0, 0, 0, 0]], atol=1e-5)
    assert data.masks.shape == (2, 128, 128) and data.masks.dtype == np.int32
    np.testing.assert_array_equal(data.masks[0], _scene_mask((128, 128)))
    assert (data.masks[1] == -1).all()   # b.png's circle has no segmentation
    assert any("person (1)" in line for line in data.skipped)
    assert any("without a segmentation" in line for line in data.skipped)


def test_coco_classifier_takes_the_largest_annotation(tmp_path, classifier):
    anns = SCENE[:3] + [_ann(5, 2, 9, [0, 0, 30, 60])]   # b.png: only a person
    json_path, folder = _coco(tmp_path, anns)
    data = D.coco(json_path, folder, classifier)
    assert data.names == ["a.png"] and data.valid is None
    np.testing.assert_array_equal(data.labels, [1])      # the square (classifier index 1), larger than the circle
    np.testing.assert_allclose(data.boxes, [[[10 * 64 / 50, 5 * 64 / 40, 30 * 64 / 50, 15 * 64 / 40]]], rtol=1e-6)
    np.testing.assert_array_equal(data.masks[0], _scene_mask((64, 64)) - 1 * (_scene_mask((64, 64)) >= 0))
    assert any("b.png" in line and "without an annotation" in line for line in data.skipped)


def _runs(mask):
    """COCO's uncompressed RLE counts of a 0/1 mask: column-major runs, starting with a run of zeros."""
    flat = mask.T.ravel()
    runs = np.diff(np.r_[0, np.flatnonzero(np.diff(flat)) + 1, flat.size]).tolist()
    return [0] + runs if flat[0] else runs


def test_coco_crowd_rle_goes_into_masks_not_boxes(tmp_path, detector):
    from pycocotools import mask as mask_utils

    crowd = np.zeros((40, 50), np.uint8)
    crowd[20:30, 5:25] = 1
    compressed = mask_utils.encode(np.asfortranarray(crowd))
    compressed["counts"] = compressed["counts"].decode("ascii")
    circle = np.zeros((40, 50), np.uint8)
    circle[0:10, 30:40] = 1
    anns = [_ann(1, 1, 2, [5, 20, 20, 10], compressed, iscrowd=1),
            _ann(2, 1, 1, [30, 0, 10, 10], {"size": [40, 50], "counts": _runs(circle)}),
            _ann(3, 1, 1, [0, 0, 5, 5], {"size": [40, 50], "counts": [5, 999999]}),   # runs past the image
            _ann(4, 1, 1, [0, 0, 5, 5], {"size": [40, 50], "counts": "5]]]]]]]]]"})]  # the same, compressed
    json_path, folder = _coco(tmp_path, anns, images=[{"id": 1, "file_name": "a.png"}])
    data = D.coco(json_path, folder, detector)
    np.testing.assert_array_equal(data.labels, [[1]])    # the crowd square is not a box
    np.testing.assert_allclose(data.boxes[0, 0], [30 * 2.56, 0, 40 * 2.56, 10 * 3.2], rtol=1e-6)
    full = np.full((40, 50), -1, np.int32)
    full[crowd == 1] = 2
    full[circle == 1] = 1
    np.testing.assert_array_equal(data.masks[0], _nearest(full, (128, 128)))
    for ann_id in (3, 4):
        assert any(f"annotation {ann_id} " in line and "RLE counts" in line for line in data.skipped)


@pytest.mark.parametrize("case, field", [
    ("not json", "not JSON"),
    ("no images", "'images'"), ("no annotations", "'annotations'"), ("no categories", "'categories'"),
    ("ann bbox", "'bbox'"), ("ann image_id", "'image_id'"), ("ann category_id", "'category_id'"),
    ("image file_name", "'file_name'"), ("image id", "'id'"), ("category name", "'name'"),
])
def test_coco_json_without_a_field_is_one_line_error(tmp_path, detector, case, field):
    json_path, folder = _coco(tmp_path, SCENE)
    doc = json.loads((tmp_path / "instances.json").read_text())
    if case == "not json":
        (tmp_path / "instances.json").write_text("{'images': [")
    else:
        where, key = case.split(" ")
        if where == "no":
            del doc[key]
        else:
            target = {"ann": doc["annotations"][1], "image": doc["images"][0], "category": doc["categories"][0]}[where]
            del target[key]
        (tmp_path / "instances.json").write_text(json.dumps(doc))
    with pytest.raises(D.DatasetError) as e:
        D.coco(json_path, folder, detector)
    assert json_path in str(e.value) and field in str(e.value) and "\n" not in str(e.value)


def test_coco_bad_annotations_are_skipped_and_reported(tmp_path, detector):
    anns = [_ann(11, 1, 2, [10, 5, 20, 10], [[10, 5, float("nan"), 5, 30, 15, 10, 15]]),
            _ann(12, 1, 1, [float("nan"), 0, 5, 5]),
            _ann(13, 1, 1, [10, 10, -4, 5]),
            _ann(14, 1, 1, [15, 8, 5, 4], _rect(15, 8, 20, 12)),
            _ann(15, 1, 1, [15, 8, 5, 4], _rect(15, 8, 1e12, 12))]
    json_path, folder = _coco(tmp_path, anns)
    data = D.coco(json_path, folder, detector)
    for ann_id, why in ((11, "NaN"), (12, "NaN"), (13, "not positive"), (15, "far outside")):
        line = next(s for s in data.skipped if f"annotation {ann_id} " in s)
        assert "a.png" in line and why in line and "\n" not in line
    np.testing.assert_array_equal(data.labels, [[1], [0]])
    assert data.valid.tolist() == [[True], [False]]


def test_coco_missing_and_broken_images_are_skipped(tmp_path, detector):
    images = [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}, {"id": 3, "file_name": "gone.png"}]
    json_path, folder = _coco(tmp_path, SCENE, images=images)
    (tmp_path / "images" / "b.png").write_bytes(b"not a png at all")
    data = D.coco(json_path, folder, detector)
    assert data.names == ["a.png"]
    assert any("b.png" in s and "not an image" in s for s in data.skipped)
    assert any("gone.png" in s and "does not exist" in s for s in data.skipped)
    (tmp_path / "images" / "a.png").unlink()
    with pytest.raises(D.DatasetError) as e:
        D.coco(json_path, folder, detector)
    assert "none of the 3 image(s)" in str(e.value) and "\n" not in str(e.value)


def test_coco_image_of_another_size_than_the_json_says_is_skipped(tmp_path, detector):
    images = [{"id": 1, "file_name": "a.png", "width": 50, "height": 40},
              {"id": 2, "file_name": "b.png", "width": 60, "height": 30}]   # b.png is 30 wide, 60 high
    data = D.coco(*_coco(tmp_path, SCENE, images=images), detector)
    assert data.names == ["a.png"] and any("b.png" in s and "60x30" in s for s in data.skipped)


def test_coco_without_any_of_the_models_classes(tmp_path, detector):
    json_path, folder = _coco(tmp_path, SCENE, categories=[{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}])
    with pytest.raises(D.DatasetError) as e:
        D.coco(json_path, folder, detector)
    text = str(e.value)
    assert "dog, cat" in text and "circle, square, triangle" in text and "__background__" not in text
    assert "\n" not in text


def test_coco_needs_pycocotools(tmp_path, detector, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    with pytest.raises(ImportError, match="pip install pycocotools"):
        D.coco(*_coco(tmp_path, SCENE), detector)


def test_coco_limit(tmp_path, detector):
    data = D.coco(*_coco(tmp_path, SCENE), detector, limit=1)
    assert data.names == ["a.png"] and data.labels.shape == (1, 2)
    with pytest.raises(D.DatasetError, match="limit"):
        D.coco(*_coco(tmp_path, SCENE), detector, limit=0)


# ----------------------------------------------------------------------------------------------- VOC


def _object(name, box, difficult=0):
    xmin, ymin, xmax, ymax = box
    return (f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin>"
            f"<ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")


def _voc(tmp_path):
    """a (50x40): a circle over the whole image, a difficult square, a dog, a box past the right edge and one
    with xmin >= xmax; b (30x60, no <filename>): a square; c: not XML; d: no <size>; e: an object without a
    <bndbox>."""
    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    _png(root / "JPEGImages" / "a.png", 50, 40)
    _png(root / "JPEGImages" / "b.jpg", 30, 60)
    size = "<size><width>{}</width><height>{}</height><depth>3</depth></size>"
    objects = (_object("Circle", (1, 1, 50, 40)) + _object("square", (11, 6, 30, 15), difficult=1)
               + _object("dog", (1, 1, 5, 5)) + _object("circle", (40, 1, 51, 10)) + _object("square", (20, 5, 20, 9)))
    (root / "Annotations" / "a.xml").write_text(f"<annotation><filename>a.png</filename>{size.format(50, 40)}"
                                                f"{objects}</annotation>")
    (root / "Annotations" / "b.xml").write_text(f"<annotation>{size.format(30, 60)}"
                                                f"{_object('square', (1, 31, 30, 60))}</annotation>")
    (root / "Annotations" / "c.xml").write_text("<annotation><size>")
    (root / "Annotations" / "d.xml").write_text(f"<annotation>{_object('circle', (1, 1, 5, 5))}</annotation>")
    (root / "Annotations" / "e.xml").write_text(f"<annotation>{size.format(30, 60)}<object><name>circle</name>"
                                                "<bndbox><xmin>1</xmin></bndbox></object></annotation>")
    return root


def test_voc_detector(tmp_path, detector):
    data = D.voc(str(_voc(tmp_path)), detector)
    assert data.names == ["a.png", "b.jpg"] and data.masks is None
    np.testing.assert_array_equal(data.labels, [[1, 2], [2, 0]])
    np.testing.assert_array_equal(data.valid, [[True, True], [True, False]])
    sx, sy = 128 / 50, 128 / 40
    np.testing.assert_allclose(data.boxes[0], [[0, 0, 128, 128], [10 * sx, 5 * sy, 30 * sx, 15 * sy]], rtol=1e-6)
    np.testing.assert_allclose(data.boxes[1, 0], [0, 30 * 128 / 60, 128, 128], rtol=1e-6)
    lines = data.skipped
    assert any("a.xml" in s and "object circle" in s and "outside the 50x40 image" in s for s in lines)
    assert any("a.xml" in s and "object square" in s and "xmin 20 >= xmax 20" in s for s in lines)
    assert not any("ymin" in s and ">=" in s for s in lines)
    assert any(s.startswith("c.xml left out") and "does not parse" in s for s in lines)
    assert any(s.startswith("d.xml left out") and "<size>" in s for s in lines)
    assert any(s.startswith("e.xml left out") and "<bndbox>" in s for s in lines)
    assert any("dog (1)" in s for s in lines)
    assert all("\n" not in s for s in lines)


def test_voc_classifier_and_limit(tmp_path, classifier):
    root = _voc(tmp_path)
    data = D.voc(str(root), classifier)
    np.testing.assert_array_equal(data.labels, [0, 1])    # a: the whole-image circle is its largest object
    np.testing.assert_allclose(data.boxes[:, 0], [[0, 0, 64, 64], [0, 32, 64, 64]], rtol=1e-6)
    assert D.voc(str(root), classifier, limit=1).names == ["a.png"]


def test_voc_missing_image_and_no_match(tmp_path, detector):
    root = _voc(tmp_path)
    (root / "JPEGImages" / "b.jpg").unlink()
    data = D.voc(str(root), detector)
    assert data.names == ["a.png"] and any(s.startswith("b.xml: image b.jpg left out") for s in data.skipped)
    for xml in ("a", "b"):
        (root / "Annotations" / f"{xml}.xml").write_text(
            f"<annotation><size><width>9</width><height>9</height></size>{_object('Dog', (1, 1, 5, 5))}</annotation>")
    with pytest.raises(D.DatasetError) as e:
        D.voc(str(root), detector)
    assert "Dog" in str(e.value) and "circle, square" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(D.DatasetError, match="no Annotations folder"):
        D.voc(str(tmp_path), detector)


# ----------------------------------------------------------------------------------------------- folder


def test_folder(tmp_path, detector, classifier):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "b.PNG")
    _png(tmp_path / "a.png", 50, 40)
    _png(tmp_path / "c.bmp", 7, 9)
    (tmp_path / "d.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    data = D.folder(str(tmp_path), detector)
    assert data.names == ["a.png", "b.PNG", "c.bmp"] and data.labels is None and data.boxes is None
    assert data.masks is None and data.classes == tuple(detector.spec.labels)
    assert any("d.jpg" in s and "empty" in s for s in data.skipped)
    # squashed as jax.image.resize(..., "bilinear", antialias=True) squashes
    want = jax.image.resize(noise.astype(np.float32) / 255, (128, 128, 3), "bilinear", antialias=True)
    np.testing.assert_allclose(data.images[1], np.asarray(want), atol=1e-5)
    assert D.folder(str(tmp_path), detector, limit=2).names == ["a.png", "b.PNG"]
    small = D.folder(str(tmp_path), classifier, limit=1)
    assert small.images.shape == (1, 64, 64, 3) and small.labels is None
    assert small.classes == tuple(classifier.spec.labels)


def test_folder_errors(tmp_path, detector):
    with pytest.raises(D.DatasetError, match="no image files") as e:
        D.folder(str(tmp_path), detector)
    assert "\n" not in str(e.value)
    (tmp_path / "x.png").write_bytes(b"junk")
    with pytest.raises(D.DatasetError, match="none of the 1 image file") as e:
        D.folder(str(tmp_path), detector)
    assert "\n" not in str(e.value)
    with pytest.raises(D.DatasetError, match="not a folder"):
        D.folder(str(tmp_path / "x.png"), detector)


# ----------------------------------------------------------------------------------------------- cli


def test_cli_dataset(tmp_path, detector, monkeypatch):
    from jaxvis import features

    monkeypatch.setattr(features, "shapes_dataset", lambda model, n, seed: ("shapes", model, n, seed))  # not generated
    assert cli.dataset("shapes", detector, n=3, seed=1) == ("shapes", detector, 3, 1)
    json_path, folder = _coco(tmp_path, SCENE)
    assert cli.dataset(f"coco:{json_path}:{folder}", detector).names == ["a.png", "b.png"]
    assert cli.dataset(f"coco:{json_path}:{folder}", detector, limit=1).names == ["a.png"]
    assert cli.dataset(f"voc:{_voc(tmp_path)}", detector).names == ["a.png", "b.jpg"]
    assert cli.dataset(folder, detector).labels is None
    for text in ("imagenet", str(tmp_path / "nowhere"), "coco:only.json", "voc:"):
        with pytest.raises(cli.TextError) as e:
            cli.dataset(text, detector)
        assert "\n" not in str(e.value) and ("coco:JSON:DIR" in str(e.value) or "voc:DIR" in str(e.value))
