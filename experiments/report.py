r"""Report pages for a folder of runs.

  python -m experiments.report runs/             # runs/runs.html: every run under runs/, with its status
  python -m experiments.report runs/x            # a single run directory: rewrites runs/x/index.html too

Each run directory (a class-model sweep, finished or not, or a saliency run) gets its page rewritten from
its data (axes.json, results.jsonl); the folder page lists the runs (model, grid, date, status: finished,
partial, diverged points) with links to their pages. A run whose data cannot be read (a damaged axes.json,
for one) is named with the reason on the terminal and on the folder page; the other runs' pages are
written all the same. Open the pages from disk; no server is needed.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "runs.html", "Name of the folder page, written inside the folder.")
flags.DEFINE_bool("refresh", True, "Rewrite each run's own page from its data first.")


def main(argv):
    if len(argv) != 2:
        raise app.UsageError("give one folder: python -m experiments.report runs/")
    from jaxvis import report

    folder = argv[1]
    if not os.path.isdir(folder):
        sys.exit(f"error: {folder} is not a folder; give the folder that holds the run directories.")
    if os.path.basename(FLAGS.out) != FLAGS.out or not FLAGS.out.endswith(".html"):
        sys.exit(f"error: --out is a file name ending in .html, written inside {folder}; got {FLAGS.out!r}.")
    runs = report.list_runs(folder, refresh=FLAGS.refresh)
    page = report.write_folder(folder, out=FLAGS.out, refresh=False)
    unreadable = [r for r in runs if r["status"].get("unreadable")]
    for r in runs:
        if r in unreadable:
            where = os.path.normpath(os.path.join(folder, r["path"]))
            print(f"warning: {where} could not be read: {r['error']}.", file=sys.stderr)
        else:
            print(f"{r['path']}: {r['kind']}, {r['model'] or '?'}, {r['grid']}, {r['status']['text']}")
    skipped = f", {len(unreadable)} of them unreadable (named in the warnings and on the page)" if unreadable else ""
    print(f"{len(runs)} run(s){skipped}. Open {page}")


if __name__ == "__main__":
    from experiments._launch import parse_flags

    app.run(main, flags_parser=parse_flags)
