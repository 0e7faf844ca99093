"""sidebyside/publish.py - `side-by-side --publish` (`make bench-publish`):
copy a finished run's results.md and chart.png to docs/bench/ and put its
tables into README.md between the markers, as `make options-doc` does for
the options table. Run it after a full run on a quiet machine."""
import os
import re
import shutil

BEGIN = "<!-- bench results: written by `make bench-publish` from docs/bench/results.md -->"
END = "<!-- end of the bench results -->"


def tables(results_md):
    """The run's heading line and every section up to the checks on the
    method (those and the versions stay in docs/bench/results.md), with
    the headings one level down to sit under the README's section."""
    text = results_md.split("\n## Checks on the method", 1)[0]
    lines = text.splitlines()
    summary = next((l for l in lines if l and not l.startswith("#")), "")
    body = text.split("\n## ", 1)[1] if "\n## " in text else ""
    body = re.sub(r"^## ", "#### ", "## " + body, flags=re.M) if body else ""
    return summary + "\n\n" + body.strip() + "\n"


def publish(out, root):
    src_md = os.path.join(out, "results.md")
    src_png = os.path.join(out, "chart.png")
    for p in (src_md, src_png):
        if not os.path.exists(p):
            raise SystemExit("side-by-side --publish: %s is missing: run `make bench` first" % p)
    dest = os.path.join(root, "docs", "bench")
    os.makedirs(dest, exist_ok=True)
    shutil.copyfile(src_md, os.path.join(dest, "results.md"))
    shutil.copyfile(src_png, os.path.join(dest, "chart.png"))
    readme = os.path.join(root, "README.md")
    with open(readme) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        raise SystemExit("side-by-side --publish: README.md lacks the markers %r ... %r" % (BEGIN, END))
    with open(src_md) as f:
        block = tables(f.read())
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(readme, "w") as f:
        f.write(head + BEGIN + "\n" + block + END + tail)
    print("side-by-side: docs/bench/results.md, docs/bench/chart.png and README.md updated")
