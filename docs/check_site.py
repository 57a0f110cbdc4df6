r"""Checks a built documentation site: every page opens in Chromium (Debian's chromium and chromium-driver,
driven by Selenium) with no console error and every image loaded, and every link between its pages (and
to an anchor in one) reaches a file and an id that exist.

  python docs/check_site.py docs/_build/html                      # `make docs` runs it after the build
  python docs/check_site.py docs/_build/html --shots /tmp/shots   # and screenshots of three pages

Exits 1 with one line per problem.
"""

from __future__ import annotations

import argparse
import html.parser
import os
import shutil
import sys
import tempfile
import time
import urllib.parse

CHROMIUM_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000", "--allow-file-access-from-files")
# The theme's template fragments, which Sphinx copies among the static files: not pages of the site.
STATIC = "_static" + os.sep


class _Links(html.parser.HTMLParser):
    """The ids of one page, and the targets of its links and images."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name"):
            if attrs.get(key) and (key == "id" or tag == "a"):
                self.ids.add(attrs[key])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])


def pages(site: str) -> list[str]:
    found = []
    for folder, _, files in os.walk(site):
        found += [os.path.join(folder, f) for f in files if f.endswith(".html")]
    return sorted(p for p in found if not os.path.relpath(p, site).startswith(STATIC))


def parse(path: str) -> _Links:
    parser = _Links()
    with open(path, encoding="utf-8") as f:
        parser.feed(f.read())
    return parser


def link_problems(site: str) -> list[str]:
    """Links and images between the site's own files that lead nowhere (outside addresses are not
    followed: the site is checked offline)."""
    parsed = {p: parse(p) for p in pages(site)}
    problems = []
    for page, found in parsed.items():
        where = os.path.relpath(page, site)
        for kind, targets in (("link", found.links), ("image", found.images)):
            for target in targets:
                url = urllib.parse.urlsplit(target)
                if url.scheme or url.netloc or target.startswith(("mailto:", "javascript:", "data:")):
                    continue
                path = urllib.parse.unquote(url.path)
                resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
                if os.path.isdir(resolved):
                    resolved = os.path.join(resolved, "index.html")
                if not os.path.exists(resolved):
                    problems.append(f"{where}: {kind} to {target} leads to no file")
                    continue
                if kind == "link" and url.fragment and resolved.endswith(".html"):
                    ids = parsed[resolved].ids if resolved in parsed else parse(resolved).ids
                    if urllib.parse.unquote(url.fragment) not in ids:
                        problems.append(f"{where}: link to {target} names no anchor of that page")
    return problems


def _find(*names: str) -> str | None:
    for name in names:
        path = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)
        if path:
            return path
    return None


def chromium_paths() -> tuple[str, str] | None:
    """Debian's chromium and its driver, or None where either is missing."""
    binary, driver_path = _find("chromium", "chromium-browser"), _find("chromedriver")
    return (binary, driver_path) if binary and driver_path else None


def browser(args=CHROMIUM_ARGS):
    """(driver, profile folder): headless Chromium through Selenium, with the browser's console log kept,
    in a profile of its own (the caller removes it after ``driver.quit()``). The report's tests use it too."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = chromium_paths()
    if paths is None:
        raise SystemExit("check_site: Debian's chromium and chromium-driver are needed (apt-get install chromium "
                         "chromium-driver; `make test` installs them).")
    binary, driver_path = paths
    profile = tempfile.mkdtemp(prefix="jaxvis-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in tuple(args) + (f"--user-data-dir={profile}",):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver's path is given, so Selenium Manager never looks for (or downloads) one.
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    return driver, profile


def page_problems(driver, site: str, page: str) -> list[str]:
    """Console errors and images that did not load, on one page opened from disk."""
    where = os.path.relpath(page, site)
    driver.get_log("browser")
    driver.get("file://" + os.path.abspath(page))
    deadline = time.time() + 10
    while driver.execute_script("return document.readyState") != "complete" and time.time() < deadline:
        time.sleep(0.05)
    for image in driver.find_elements("tag name", "img"):      # lazy images load once scrolled to
        driver.execute_script("arguments[0].scrollIntoView()", image)
    deadline = time.time() + 10   # until every image has loaded or failed
    while driver.execute_script("return Array.from(document.images).some(i => !i.complete)") and time.time() < deadline:
        time.sleep(0.05)
    broken = driver.execute_script(
        "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
    problems = [f"{where}: image {src} did not load" for src in broken]
    problems += [f"{where}: console error: {e['message']}" for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return problems


def check(site: str, shots: str | None = None) -> list[str]:
    if not os.path.isfile(os.path.join(site, "index.html")):
        raise SystemExit(f"check_site: {site} has no index.html; build the site first (make docs).")
    problems = link_problems(site)
    driver, profile = browser()
    try:
        visited = pages(site)
        for page in visited:
            problems += page_problems(driver, site, page)
        if shots:
            os.makedirs(shots, exist_ok=True)
            for name in ("index.html", "tutorials/readable.html", "api/objectives.html"):
                driver.get("file://" + os.path.abspath(os.path.join(site, name)))
                time.sleep(0.5)
                driver.save_screenshot(os.path.join(shots, name.replace("/", "_").replace(".html", ".png")))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    print(f"check_site: {len(visited)} pages opened in Chromium and their links followed; {len(problems)} problem(s).")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", help="the built site's folder (docs/_build/html)")
    parser.add_argument("--shots", help="a folder for screenshots of the landing page, a tutorial and an API page")
    args = parser.parse_args()
    problems = check(args.site, args.shots)
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
