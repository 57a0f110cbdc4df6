"""Datasets for the channel analyses (``jaxvis.features``) read from files: a folder of images, COCO instances
and Pascal VOC.

    from jaxvis import datasets
    data = datasets.folder("photos/", model)                             # unlabelled images
    data = datasets.coco("instances_val2017.json", "val2017/", model)    # boxes, classes and masks
    data = datasets.voc("VOCdevkit/VOC2012", model, limit=500)           # boxes and classes
    print(len(data), data.skipped)                                       # what was left out, and why

Every image is read by ``images.load_image`` and squashed to the model's input size, without a crop: bilinear,
antialiased when it shrinks (Pillow's float resize, which equals ``jax.image.resize(..., "bilinear",
antialias=True)``). Boxes are scaled with it (xyxy, pixels of the resized image); masks are rasterised in the
file's pixels and resized nearest-neighbour (output pixel (i, j) takes the file's pixel at ((i + 0.5) h / H,
(j + 0.5) w / W)). Class names are matched to the model's labels case-insensitively (a detector's
``__background__`` matches nothing); objects of other classes are left out and counted.

What cannot be used (an image that is missing or not an image, an annotation with NaN coordinates, a VOC file
that does not parse) is left out and said, one line each, in ``Dataset.skipped``; a file that cannot be read as
a whole (a COCO JSON without its ``images``) and a result without any image raise a one-line ``DatasetError``.
The readers write nothing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from typing import Any

import numpy as np

from jaxvis.features import Dataset
from jaxvis.images import ImageError, load_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class DatasetError(ValueError):
    """A dataset that cannot be read at all: the message names the file and what it lacks."""


@dataclasses.dataclass
class _Object:
    """One labelled object of an image: the model's class index, its xyxy box in the file's pixels (None: no
    box, a COCO crowd region) and its mask in the file's pixels (None: no segmentation)."""

    cls: int
    box: tuple[float, float, float, float] | None
    mask: np.ndarray | None = None


@dataclasses.dataclass
class _Image:
    """One image as the datasets keep it: resized pixels and its objects, boxes already scaled."""

    name: str
    pixels: np.ndarray
    objects: list[_Object]
    mask: np.ndarray | None


# ----------------------------------------------------------------------------------------------- helpers


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _check_limit(limit) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise DatasetError(f"limit is the most images to read, a whole number from 1 (or None: all); got {limit!r}")
    return int(limit)


def _class_index(model) -> dict[str, int]:
    """Lower-cased class name -> the model's class index (a detector's background left out)."""
    labels = list(model.spec.labels)
    first = 1 if model.spec.is_detector else 0
    out: dict[str, int] = {}
    for i in range(first, len(labels)):
        out.setdefault(str(labels[i]).strip().lower(), i)
    return out


def _model_names(model) -> str:
    first = 1 if model.spec.is_detector else 0
    return ", ".join(model.spec.labels[first:])


def _listing(counts: dict[str, int], most: int = 10) -> str:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{name} ({n})" for name, n in items[:most])
    return text + (f" and {len(items) - most} more" if len(items) > most else "")


def _names(names: list[str], most: int = 5) -> str:
    text = ", ".join(names[:most])
    return text + (f" and {len(names) - most} more" if len(names) > most else "")


def _squash(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, 3) -> (H, W, 3) float32: bilinear, antialiased when shrinking (Pillow's float resize)."""
    from PIL import Image

    h, w = size
    if image.shape[:2] == (h, w):
        return np.asarray(image, np.float32)
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], np.float32), "F")
                           .resize((w, h), Image.BILINEAR)) for c in range(3)]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)


def _nearest(label_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) -> (H, W): output pixel (i, j) takes input pixel (floor((i + 0.5) h / H), floor((j + 0.5) w / W))."""
    h, w = label_map.shape
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64), w - 1)
    return label_map[rows[:, None], cols[None, :]]


def _read(path: str, name: str, expected: tuple[int, int] | None, where: str, skipped: list[str]
          ) -> np.ndarray | None:
    """The image at ``path``, or None with the reason in ``skipped`` (unreadable, or not the ``expected`` (h, w)
    its annotations are for)."""
    try:
        image = load_image(path, notes=[])
    except ImageError as e:
        skipped.append(f"{where}image {name} left out: {_one_line(e)}")
        return None
    h, w = image.shape[:2]
    if expected is not None and tuple(expected) != (h, w):
        skipped.append(f"{where}image {name} left out: its annotations are for a {expected[1]}x{expected[0]} "
                       f"image, the file is {w}x{h}")
        return None
    return image


def _image(name: str, image: np.ndarray, objects: list[_Object], size: tuple[int, int], has_masks: bool
           ) -> _Image:
    """Resizes an image, scales its objects' boxes and paints its mask: objects in order of decreasing mask area
    (the smaller drawn over the larger), -1 where none is."""
    h, w = image.shape[:2]
    sx, sy = size[1] / w, size[0] / h
    scaled = [_Object(o.cls, None if o.box is None else (o.box[0] * sx, o.box[1] * sy, o.box[2] * sx, o.box[3] * sy))
              for o in objects]
    mask = None
    if has_masks:
        full = np.full((h, w), -1, np.int32)
        drawn = [o for o in objects if o.mask is not None]
        for o in sorted(drawn, key=lambda o: -int(np.count_nonzero(o.mask))):
            full[o.mask.astype(bool)] = o.cls
        mask = _nearest(full, size)
    return _Image(name, _squash(image, size), scaled, mask)


def _box_area(o: _Object) -> float:
    return (o.box[2] - o.box[0]) * (o.box[3] - o.box[1])


def _dataset(read: list[_Image], model, skipped: list[str], empty: str, labelled: bool = True) -> Dataset:
    """The images read, as a ``Dataset`` of the model: a detector's (N, M) labels, boxes and valid; a
    classifier's class of each image's largest boxed object; neither unless ``labelled``. ``empty``: the message
    when none was read, to which the first line of ``skipped`` is added."""
    if not read:
        first = f"; the first left out: {skipped[0]}" if skipped else ""
        raise DatasetError(_one_line(f"{empty}{first}"))
    size = tuple(int(s) for s in model.spec.input_size)
    images = np.stack([r.pixels for r in read])
    names = [r.name for r in read]
    classes = tuple(model.spec.labels)
    masks = None
    if any(r.mask is not None for r in read):
        masks = np.stack([r.mask if r.mask is not None else np.full(size, -1, np.int32) for r in read])
    if not labelled:
        return Dataset(images, None, None, None, masks, names, classes, skipped)
    if model.spec.is_detector:
        m = max(1, max(sum(o.box is not None for o in r.objects) for r in read))
        labels = np.zeros((len(read), m), np.int32)
        boxes = np.zeros((len(read), m, 4), np.float32)
        valid = np.zeros((len(read), m), bool)
        for i, r in enumerate(read):
            for j, o in enumerate(o for o in r.objects if o.box is not None):
                labels[i, j], boxes[i, j], valid[i, j] = o.cls, o.box, True
        return Dataset(images, labels, boxes, valid, masks, names, classes, skipped)
    best = [max((o for o in r.objects if o.box is not None), key=_box_area) for r in read]
    labels = np.array([o.cls for o in best], np.int32)
    boxes = np.array([[o.box] for o in best], np.float32).reshape(len(read), 1, 4)
    return Dataset(images, labels, boxes, None, masks, names, classes, skipped)


# ----------------------------------------------------------------------------------------------- folder


def folder(path: str, model, limit: int | None = None) -> Dataset:
    """Every image file of a folder, unlabelled, at the model's input size.

    Args:
      path: a folder; its files ending in .png, .jpg, .jpeg, .bmp or .webp (any case) are read in order of
        their names (sub-folders are not searched).
      model: the loaded model whose input size and class names the dataset takes.
      limit: at most this many images are read, the first by name (None: all).

    Returns:
      A ``Dataset`` with ``labels`` None (``features.targets_of`` then explains what the model finds), no boxes
      or masks; files that cannot be read are left out and said in ``skipped``.
    """
    limit = _check_limit(limit)
    if not os.path.isdir(path):
        raise DatasetError(f"{path!r} is not a folder; give a folder of image files ({', '.join(IMAGE_EXTENSIONS)})")
    files = sorted(f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS)
                   and os.path.isfile(os.path.join(path, f)))
    if not files:
        raise DatasetError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {path!r}; give a folder of images")
    size = tuple(int(s) for s in model.spec.input_size)
    skipped: list[str] = []
    read = []
    for name in files[:limit]:
        image = _read(os.path.join(path, name), name, None, "", skipped)
        if image is not None:
            read.append(_Image(name, _squash(image, size), [], None))
    return _dataset(read, model, skipped, f"none of the {len(files[:limit])} image file(s) read in {path!r} could be "
                                          "used", labelled=False)


# ----------------------------------------------------------------------------------------------- COCO


def _field(entry: Any, key: str, where: str, path: str, needs: str) -> Any:
    if not isinstance(entry, dict):
        raise DatasetError(f"{path!r}: {where} is not an object ({type(entry).__name__}); {needs}")
    if key not in entry:
        raise DatasetError(f"{path!r}: {where} has no {key!r} field; {needs}")
    return entry[key]


def _key(value: Any, what: str, path: str) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DatasetError(f"{path!r}: {what} is {value!r}; ids are whole numbers or strings")
    return value


def _read_coco_json(path: str) -> dict[str, list]:
    if not os.path.isfile(path):
        raise DatasetError(f"COCO annotations {path!r} do not exist or are not a file; check the path")
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except UnicodeDecodeError:
        raise DatasetError(f"{path!r} is not a UTF-8 text file; give a COCO instances JSON file") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path!r} is not JSON ({e.msg} at line {e.lineno}, column {e.colno}); give a COCO "
                           "instances JSON file") from None
    except (OSError, ValueError, RecursionError) as e:
        raise DatasetError(f"{path!r} could not be read ({_one_line(e) or type(e).__name__})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path!r} holds a JSON {type(data).__name__}, not an object with images, annotations "
                           "and categories; give a COCO instances file")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DatasetError(f"{path!r} has no {key!r} field; a COCO instances file has images, annotations and "
                               "categories")
        if not isinstance(data[key], list):
            raise DatasetError(f"{path!r}: {key!r} is a {type(data[key]).__name__}, not a list")
    return data


def _finite_numbers(values: Any) -> bool:
    return (isinstance(values, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                       for v in values) and all(math.isfinite(v) for v in values))


def _bbox_problem(bbox: Any) -> str | None:
    """Why a COCO bbox [x, y, w, h] cannot be used, or None."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return f"its bbox {_one_line(bbox)[:60]} is not [x, y, width, height]"
    if not _finite_numbers(bbox):
        return f"its bbox {list(bbox)} holds NaN, infinite or non-numeric values"
    if bbox[2] <= 0 or bbox[3] <= 0:
        return f"its bbox {list(bbox)} has a width or height that is not positive"
    return None


def _polygon_problem(segmentation: Any) -> str | None:
    """Why a segmentation cannot be used before the image's size is known, or None (None and [] are no
    segmentation; dicts are RLE, checked with the size)."""
    if segmentation is None or isinstance(segmentation, dict) or segmentation == []:
        return None
    if not isinstance(segmentation, list):
        return "its segmentation is neither polygons nor RLE"
    for k, poly in enumerate(segmentation):
        if not isinstance(poly, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in poly):
            return f"its polygon {k} is not a list of numbers"
        if not all(math.isfinite(v) for v in poly):
            return f"its polygon {k} holds NaN or infinite coordinates"
        if len(poly) < 6 or len(poly) % 2:
            return f"its polygon {k} has {len(poly)} numbers; a polygon is at least three x, y pairs"
    return None


def _rle_counts(text: str) -> list[int] | None:
    """The run lengths of a compressed COCO RLE string (pycocotools' rleFrString), or None when it is malformed."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        x = k = 0
        more = True
        while more:
            if p >= len(text):
                return None
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _sized_problem(segmentation: Any, h: int, w: int) -> str | None:
    """Why a segmentation cannot be drawn on an h x w image, or None: polygons far outside it, RLE of another
    size or whose runs do not cover it exactly (pycocotools would write past its buffer)."""
    if isinstance(segmentation, list):
        for k, poly in enumerate(segmentation):
            xs, ys = np.asarray(poly[0::2], np.float64), np.asarray(poly[1::2], np.float64)
            if xs.min() < -w or xs.max() > 2 * w or ys.min() < -h or ys.max() > 2 * h:
                return f"its polygon {k} reaches far outside the {w}x{h} image"
        return None
    size, counts = segmentation.get("size"), segmentation.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and size == [h, w]):
        return f"its RLE size {_one_line(size)[:40]} is not the image's [{h}, {w}]"
    if isinstance(counts, str):
        counts = _rle_counts(counts)
    elif not (isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in counts)):
        counts = None
    if counts is None or any(c < 0 for c in counts) or sum(counts) != h * w:
        return f"its RLE counts do not cover the {w}x{h} image"
    return None


def coco(json_path: str, image_dir: str, model, limit: int | None = None) -> Dataset:
    """A COCO-style instances JSON and its images, as a dataset of the model's classes.

    Categories are matched to the model's class names (case-insensitive); annotations of other categories are
    left out and counted in one ``skipped`` line. Crowd annotations (``iscrowd`` 1) are left out of the boxes
    and labels but drawn in the masks: their pixels do show the class. Boxes that overshoot the image are
    clipped to it. An annotation whose bbox or polygon holds NaN, or whose box is empty, is left out (boxes and
    masks both) and said in ``skipped`` with its image's file name and its id, as are images that are missing,
    not images, or of another size than the JSON says.

    Args:
      json_path: the instances JSON (``images`` with ``id`` and ``file_name``, ``annotations`` with ``id``,
        ``image_id``, ``category_id``, ``bbox`` [x, y, w, h] in the image's pixels and optionally
        ``segmentation`` (polygons or RLE) and ``iscrowd``, ``categories`` with ``id`` and ``name``).
      image_dir: the folder that the images' ``file_name`` are relative to.
      model: the loaded model whose input size and class names the dataset takes.
      limit: at most this many images are read: the first by file name (for a classifier, the first that have
        an annotation of its classes). None: all.

    Returns:
      A ``Dataset``. A detector's: ``labels`` (N, M) int32 class indices, ``boxes`` (N, M, 4) float32 xyxy in
      the resized image's pixels and ``valid`` (N, M), M the most objects of one image (at least 1; images
      without an object of the model's classes are kept). A classifier's: ``labels`` (N,) the class of each
      image's largest annotation by box area, ``boxes`` (N, 1, 4) that annotation's box, images without one left
      out. ``masks`` (N, H, W) int32, each pixel the class of the object drawn there (in order of decreasing
      area, so smaller objects lie over larger ones; -1: none, and where an object has no segmentation), or
      None when no annotation of the images read has a segmentation.

    Raises:
      DatasetError: the JSON is missing, not JSON, lacks a required field, or none of its categories is one of
        the model's classes, or no image could be used.
      ImportError: pycocotools is not installed.
    """
    try:
        from pycocotools.coco import COCO
    except ImportError:
        raise ImportError("reading a COCO dataset needs pycocotools: pip install pycocotools") from None
    limit = _check_limit(limit)
    data = _read_coco_json(json_path)
    index = _class_index(model)
    needs_cat = "every category needs id and name"
    category: dict[Any, int | None] = {}
    category_name: dict[Any, str] = {}
    for i, c in enumerate(data["categories"]):
        key = _key(_field(c, "id", f"categories[{i}]", json_path, needs_cat), f"categories[{i}] id", json_path)
        name = _field(c, "name", f"categories[{i}]", json_path, needs_cat)
        category_name[key] = str(name)
        category[key] = index.get(str(name).strip().lower())
    if not any(v is not None for v in category.values()):
        raise DatasetError(_one_line(f"none of the categories of {json_path!r} ({', '.join(category_name.values())})"
                                     f" is a class of {model.spec.arch} ({_model_names(model)}); class names are "
                                     "matched case-insensitively"))
    needs_image = "every image needs id and file_name"
    images: dict[Any, dict] = {}
    for i, im in enumerate(data["images"]):
        key = _key(_field(im, "id", f"images[{i}]", json_path, needs_image), f"images[{i}] id", json_path)
        name = _field(im, "file_name", f"images[{i}]", json_path, needs_image)
        if not isinstance(name, str) or not name:
            raise DatasetError(f"{json_path!r}: images[{i}] has file_name {name!r}; give the image's file name")
        if key in images:
            raise DatasetError(f"{json_path!r}: image id {key!r} appears twice (images[{i}]); ids must be unique")
        images[key] = im
    needs_ann = "every annotation needs image_id, category_id and bbox"
    per_image: dict[Any, list[tuple[Any, dict]]] = {key: [] for key in images}
    unlisted = 0
    for i, a in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        where = f"annotation {a['id']!r} ({where})" if isinstance(a, dict) and "id" in a else where
        image_id = _key(_field(a, "image_id", where, json_path, needs_ann), f"{where} image_id", json_path)
        cat = _key(_field(a, "category_id", where, json_path, needs_ann), f"{where} category_id", json_path)
        _field(a, "bbox", where, json_path, needs_ann)
        if image_id not in images or cat not in category:
            unlisted += 1
            continue
        per_image[image_id].append((a.get("id", where), a))

    def expected_size(im: dict) -> tuple[int, int] | None:
        h, w = im.get("height"), im.get("width")
        ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (h, w))
        return (h, w) if ok else None

    size = tuple(int(s) for s in model.spec.input_size)
    base = os.path.basename(json_path)
    skipped: list[str] = []
    other: dict[str, int] = {}
    passed_over: list[str] = []
    without_segmentation = 0
    has_masks = False
    coco_api = COCO()  # annToMask reads the image's height and width from its index, filled as images are read
    read: list[_Image] = []
    attempted = 0
    for key in sorted(images, key=lambda k: (images[k]["file_name"], str(k))):
        if limit is not None and attempted >= limit:
            break
        im = images[key]
        name = im["file_name"]
        usable = []
        for ann_id, a in per_image[key]:
            cls = category[a["category_id"]]
            if cls is None:
                label = category_name[a["category_id"]]
                other[label] = other.get(label, 0) + 1
                continue
            problem = _bbox_problem(a["bbox"]) or _polygon_problem(a.get("segmentation"))
            if problem:
                skipped.append(f"{base}: image {name}: annotation {ann_id} left out: {problem}")
                continue
            usable.append((ann_id, cls, a))
        if not model.spec.is_detector and not any(not a.get("iscrowd") for _, _, a in usable):
            passed_over.append(name)
            continue
        attempted += 1
        image = _read(os.path.join(image_dir, name), name, expected_size(im), f"{base}: ", skipped)
        if image is None:
            continue
        h, w = image.shape[:2]
        coco_api.imgs[key] = {"id": key, "height": h, "width": w}
        objects = []
        for ann_id, cls, a in usable:
            x, y, bw, bh = (float(v) for v in a["bbox"])
            box = (max(x, 0.0), max(y, 0.0), min(x + bw, float(w)), min(y + bh, float(h)))
            segmentation = a.get("segmentation")
            problem = None if not segmentation else _sized_problem(segmentation, h, w)
            if not problem and (box[2] <= box[0] or box[3] <= box[1]):
                problem = f"its bbox {list(a['bbox'])} lies outside the {w}x{h} image"
            if problem:
                skipped.append(f"{base}: image {name}: annotation {ann_id} left out: {problem}")
                continue
            mask = None
            if segmentation:
                with warnings.catch_warnings():  # pycocotools' decode under NumPy 2
                    warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
                    mask = coco_api.annToMask({"image_id": key, "segmentation": segmentation})
                has_masks = True
            else:
                without_segmentation += 1
            objects.append(_Object(cls, None if a.get("iscrowd") else box, mask))
        if not model.spec.is_detector and not any(o.box is not None for o in objects):
            skipped.append(f"{base}: image {name} left out: none of its annotations of {model.spec.arch}'s classes "
                           "could be used")
            continue
        read.append(_image(name, image, objects, size, any(o.mask is not None for o in objects)))
    if other:
        skipped.append(f"{base}: {sum(other.values())} annotation(s) of categories {model.spec.arch} does not have "
                       f"left out: {_listing(other)}")
    if unlisted:
        skipped.append(f"{base}: {unlisted} annotation(s) of image ids or category ids the file does not list left out")
    if passed_over:
        skipped.append(f"{base}: {len(passed_over)} image(s) without an annotation of {model.spec.arch}'s classes "
                       f"left out: {_names(passed_over)}")
    if has_masks and without_segmentation:
        skipped.append(f"{base}: {without_segmentation} annotation(s) without a segmentation are not in the masks "
                       "(-1 there)")
    empty = (f"none of the {attempted} image(s) of {json_path!r} read from {image_dir!r} could be used" if attempted
             else f"none of the {len(images)} image(s) of {json_path!r} has an annotation of {model.spec.arch}'s "
             "classes that could be used")
    return _dataset(read, model, skipped, empty)


# ----------------------------------------------------------------------------------------------- Pascal VOC


def _voc_file(path: str, index: dict[str, int], seen: dict[str, int]
              ) -> tuple[str, tuple[int, int], list[tuple[str, _Object | str]]] | str:
    """A VOC XML as (image file name, (h, w), [(object name, object or why it is left out)]), or why the file is
    left out. ``seen`` counts every object name found."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        return f"it does not parse as XML ({_one_line(e)})"
    except (OSError, ValueError) as e:
        return f"it could not be read ({_one_line(e)})"
    stem = os.path.splitext(os.path.basename(path))[0]
    filename = os.path.basename((root.findtext("filename") or "").strip()) or stem + ".jpg"
    try:
        w, h = int(float(root.findtext("size/width"))), int(float(root.findtext("size/height")))
    except (TypeError, ValueError):
        return "it lacks a numeric <size> <width> and <height>"
    if w < 1 or h < 1:
        return f"its <size> is {w}x{h}"
    objects: list[tuple[str, _Object | str]] = []
    for k, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        try:
            xmin, ymin, xmax, ymax = (float(obj.findtext(f"bndbox/{c}")) for c in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            return f"object {k} ({name or 'no name'}) lacks a numeric <bndbox> xmin, ymin, xmax and ymax"
        if not name:
            objects.append((f"object {k}", "it has no <name>"))
            continue
        seen[name] = seen.get(name, 0) + 1
        if name.lower() not in index:
            objects.append((name, ""))
            continue
        x0, y0, x1, y1 = xmin - 1, ymin - 1, xmax, ymax
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            objects.append((name, "its box holds NaN or infinite coordinates"))
        elif xmin >= xmax:
            objects.append((name, f"its box has xmin {xmin:g} >= xmax {xmax:g}"))
        elif ymin >= ymax:
            objects.append((name, f"its box has ymin {ymin:g} >= ymax {ymax:g}"))
        elif x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            objects.append((name, f"its box xmin {xmin:g}, ymin {ymin:g}, xmax {xmax:g}, ymax {ymax:g} is outside the "
                                  f"{w}x{h} image (VOC coordinates run from 1 to the width and height)"))
        else:
            objects.append((name, _Object(index[name.lower()], (x0, y0, x1, y1))))
    return filename, (h, w), objects


def voc(root: str, model, limit: int | None = None) -> Dataset:
    """A Pascal VOC folder as a dataset of the model's classes: ``root/Annotations/*.xml``, each naming its image
    in ``root/JPEGImages`` by ``<filename>`` (else the XML's stem + .jpg).

    Objects' ``<name>`` are matched to the model's class names (case-insensitive); objects of other classes are
    left out and counted in one ``skipped`` line. Objects marked ``<difficult>1`` (and truncated ones) are kept.
    Boxes are VOC's 1-based inclusive pixel coordinates, turned into 0-based xyxy edges (xmin - 1, ymin - 1,
    xmax, ymax) and scaled to the resized image. An XML that does not parse or lacks its ``<size>`` or an
    object's ``<bndbox>`` numbers is left out, and so is a box outside the image (beyond ``<size>``, or xmin >=
    xmax): each is said in ``skipped`` with the XML's name (and the object's).

    Args:
      root: the VOC folder (e.g. ``VOCdevkit/VOC2012``).
      model: the loaded model whose input size and class names the dataset takes.
      limit: at most this many images are read: the first by XML name (for a classifier, the first with an
        object of its classes). None: all.

    Returns:
      A ``Dataset`` as ``coco`` gives (a detector's (N, M) labels, boxes and valid; a classifier's class and box
      of each image's largest object), ``masks`` None.

    Raises:
      DatasetError: no ``Annotations`` folder or XML files, objects but none of the model's classes in the files
        read, or no image could be used.
    """
    limit = _check_limit(limit)
    folder_ = os.path.join(root, "Annotations")
    if not os.path.isdir(folder_):
        raise DatasetError(f"{root!r} has no Annotations folder; a Pascal VOC folder holds Annotations/*.xml and "
                           "JPEGImages/")
    files = sorted(f for f in os.listdir(folder_) if f.lower().endswith(".xml"))
    if not files:
        raise DatasetError(f"no .xml files in {folder_!r}; a Pascal VOC folder holds Annotations/*.xml and JPEGImages/")
    index = _class_index(model)
    size = tuple(int(s) for s in model.spec.input_size)
    skipped: list[str] = []
    seen: dict[str, int] = {}
    other: dict[str, int] = {}
    passed_over: list[str] = []
    read: list[_Image] = []
    attempted = 0
    for xml in files:
        if limit is not None and attempted >= limit:
            break
        found = _voc_file(os.path.join(folder_, xml), index, seen)
        if isinstance(found, str):
            skipped.append(f"{xml} left out: {found}")
            continue
        filename, expected, entries = found
        objects = []
        for name, obj in entries:
            if isinstance(obj, _Object):
                objects.append(obj)
            elif obj:
                skipped.append(f"{xml}: object {name} left out: {obj}")
            else:
                other[name] = other.get(name, 0) + 1
        if not model.spec.is_detector and not objects:
            passed_over.append(xml)
            continue
        attempted += 1
        image = _read(os.path.join(root, "JPEGImages", filename), filename, expected, f"{xml}: ", skipped)
        if image is not None:
            read.append(_image(filename, image, objects, size, False))
    if seen and not any(name.lower() in index for name in seen):
        raise DatasetError(_one_line(f"none of the object names in {folder_!r} ({', '.join(sorted(seen))}) is a "
                                     f"class of {model.spec.arch} ({_model_names(model)}); class names are matched "
                                     "case-insensitively"))
    if other:
        skipped.append(f"{sum(other.values())} object(s) of classes {model.spec.arch} does not have left out: "
                       f"{_listing(other)}")
    if passed_over:
        skipped.append(f"{len(passed_over)} annotation file(s) without an object of {model.spec.arch}'s classes "
                       f"left out: {_names(passed_over)}")
    return _dataset(read, model, skipped, f"none of the {len(files)} annotation file(s) in {folder_!r} gave an image "
                                          "that could be used")
