"""Label lists that ship with the package."""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def _read(name: str) -> tuple[str, ...]:
    text = resources.files("jaxvis.assets").joinpath(name).read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


def imagenet() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in torchvision's order (index 0 "tench")."""
    return _read("imagenet1k_labels.txt")


def coco91() -> tuple[str, ...]:
    """torchvision's 91 COCO detection labels: background, then names at COCO category ids, "N/A" gaps."""
    return _read("coco91_labels.txt")


class CategoryError(ValueError):
    """A category that names no class, or names several."""


def resolve(categories, labels) -> list[int]:
    """Class indices for category names or indices (ints or digit strings), as given by a user.

    An unknown name gets the closest names as suggestions; a name that several classes share (ImageNet
    has two "crane"s) asks for an index.
    """
    import difflib

    out = []
    lowered = [lab.lower() for lab in labels]
    for cat in categories:
        text = str(cat).strip()
        if text.lstrip("-").isdigit():
            i = int(text)
            if not 0 <= i < len(labels):
                raise CategoryError(f"category index {i} is out of range: this model's classes are numbered "
                                    f"0 to {len(labels) - 1}.")
            out.append(i)
            continue
        hits = [i for i, lab in enumerate(lowered) if lab == text.lower()]
        if len(hits) == 1:
            out.append(hits[0])
            continue
        if len(hits) > 1:
            raise CategoryError(f"category {text!r} names {len(hits)} classes ({', '.join(map(str, hits))}); "
                                "give the index you mean.")
        close = difflib.get_close_matches(text.lower(), lowered, n=5, cutoff=0.6)
        contains = [lab for lab in lowered if text.lower() in lab and lab not in close][:5 - len(close)]
        suggestions = [labels[lowered.index(c)] for c in close + contains]
        hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else \
            "; give a class name of the model or an index."
        raise CategoryError(f"unknown category {text!r}{hint}")
    return out


def loss_label(loss: dict[str, float]) -> str:
    """A weighted sum of named terms as text: ``score+sq`` for unit weights, ``score+0.1*sq`` otherwise,
    ``score-0.5*tv`` for a negative weight (an objective's name, and the label of a run's loss axis)."""
    parts = [name if w == 1 else f"{w:g}*{name}" for name, w in loss.items()]
    return "+".join(parts).replace("+-", "-") if parts else "0"
