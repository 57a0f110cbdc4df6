"""The documentation site's check (docs/check_site.py, which `make docs` runs on the built site) finds each
kind of fault it is there for, on small sites written here: a link to a missing page or anchor, an image
that does not load, a script error; and passes a site without them. The site itself is built and checked
by `make docs` (CI runs it)."""

import os

import pytest

from conftest import docs_module
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201a1dc5d0f0000000049454e44ae426082")


def check_site():
    return docs_module("check_site")


def write_site(folder, index_body, guide_body='<h1 id="top">Guide</h1>'):
    os.makedirs(folder / "guides", exist_ok=True)
    (folder / "pixel.png").write_bytes(PNG)
    (folder / "index.html").write_text(f"<html><body>{index_body}</body></html>")
    (folder / "guides" / "guide.html").write_text(
        f'<html><body>{guide_body}<a href="../index.html">home</a><img src="../pixel.png"></body></html>')


def test_link_problems_name_missing_pages_and_anchors(tmp_path):
    site = check_site()
    write_site(tmp_path, '<a href="guides/guide.html#top">ok</a> <a href="https://example.org/x">outside</a>'
                         '<a href="guides/gone.html">gone</a> <a href="guides/guide.html#nowhere">no anchor</a>'
                         '<img src="missing.png">')
    problems = site.link_problems(str(tmp_path))
    assert len(problems) == 3, problems
    assert any("guides/gone.html leads to no file" in p for p in problems)
    assert any("#nowhere names no anchor" in p for p in problems)
    assert any("image to missing.png leads to no file" in p for p in problems)


def test_a_clean_site_passes_and_a_broken_one_fails_in_the_browser(tmp_path):
    pytest.importorskip("selenium")
    site = check_site()
    if site.chromium_paths() is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (make test installs them with apt-get)")
    clean, broken = tmp_path / "clean", tmp_path / "broken"
    write_site(clean, '<a href="guides/guide.html#top">guide</a><img src="pixel.png">')
    write_site(broken, '<a href="guides/guide.html">guide</a><img src="pixel.png">'
                       '<script>undefinedFunction()</script>',
               guide_body='<img src="data:image/png;base64,AAAA">')
    assert site.check(str(clean)) == []
    problems = site.check(str(broken))
    assert any(p.startswith("index.html: console error") and "undefinedFunction" in p for p in problems), problems
    assert any(p.startswith(os.path.join("guides", "guide.html") + ": image") for p in problems), problems


def test_google_style_sections_become_titles_and_lists():
    """The API reference's docstring parser (docs/_ext/jaxvis_sphinx.py) turns an Args section into a list
    whose entries name their argument in code, keeps continuation lines with their entry, and leaves the
    text around the sections alone."""
    pytest.importorskip("autodoc2")
    sections = docs_module("_ext/jaxvis_sphinx")
    doc = ("Does a thing.\n\nArgs:\n  x: (H, W, 3) the image;\n    in [0, 1].\n  steps (int): how many.\n\n"
           "Returns:\n  the map.\n\nMore text.")
    assert sections.google_sections(doc).split("\n") == [
        "Does a thing.", "", "**Args**", "", "- `x`: (H, W, 3) the image;", "  in [0, 1].",
        "- `steps` *(int)*: how many.", "", "**Returns**", "", "the map.", "", "More text."]
