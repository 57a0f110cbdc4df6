r"""Screenshots of the run report for the README, taken by headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium).

  python docs/screenshots.py --work /tmp/shots      # writes docs/report_{tiles,compare,detail,saliency}.png

It runs the lab's sweep on the shipped shapes classifier (6 classes x 3 learning rates x 3 losses, 200
steps; a minute or two on a CPU) and saliency maps of the shapes detector under two methods, then opens
their pages.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def make_runs(work: str) -> tuple[str, str]:
    import numpy as np
    from PIL import Image

    from experiments.demo import _classifier_settings
    from jaxvis import assets, sweeps
    from jaxvis.data import shapes

    sweep_dir = os.path.join(work, "classifier")
    if not os.path.exists(os.path.join(sweep_dir, "results.jsonl")):
        sweeps.run(_classifier_settings(200), sweep_dir, progress=False)
    sal_dir = os.path.join(work, "detector_saliency")
    if not os.path.exists(os.path.join(sal_dir, "results.jsonl")):
        scenes, _, _, _ = shapes.detection_set(11, 1)
        image = os.path.join(work, "scene.png")
        Image.fromarray((scenes[0] * 255).astype(np.uint8)).save(image)
        for method in ("gradient", "smoothgrad"):
            subprocess.run([sys.executable, "-m", "experiments.saliency", "--params", assets.path("detector"),
                            "--image", image, "--detection", "0,1,2", "--method", method, "--out",
                            os.path.join(sal_dir)], cwd=ROOT, check=True)
    return sweep_dir, sal_dir


def settle(driver, seconds=0.8):
    time.sleep(seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "jaxvis-shots"))
    parser.add_argument("--out", default=os.path.join(ROOT, "docs"))
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    sweep_dir, sal_dir = make_runs(args.work)
    from check_site import browser   # beside this script

    driver, profile = browser(("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                               "--disable-component-update", "--disable-sync", "--no-first-run",
                               "--hide-scrollbars", "--window-size=1280,860"))
    try:
        page = "file://" + os.path.abspath(os.path.join(sweep_dir, "index.html"))
        driver.get(page)
        settle(driver)
        driver.save_screenshot(os.path.join(args.out, "report_tiles.png"))

        def choose(select_id, value):
            driver.execute_script("const s = document.getElementById(arguments[0]); s.value = arguments[1];"
                                  "s.dispatchEvent(new Event('change'));", select_id, str(value))

        choose("filter-target", 0)
        driver.execute_script("location.hash = '#compare'")
        settle(driver, 0.3)
        choose("rows", "lr")
        choose("cols", "loss")
        settle(driver)
        driver.save_screenshot(os.path.join(args.out, "report_compare.png"))
        driver.execute_script("location.hash = '#point=3'")
        settle(driver)
        driver.save_screenshot(os.path.join(args.out, "report_detail.png"))
        driver.get("file://" + os.path.abspath(os.path.join(sal_dir, "index.html")))
        settle(driver)
        driver.save_screenshot(os.path.join(args.out, "report_saliency.png"))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    print("wrote", ", ".join(f"docs/report_{v}.png" for v in ("tiles", "compare", "detail", "saliency")))


if __name__ == "__main__":
    main()
