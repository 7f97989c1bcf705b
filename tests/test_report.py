"""The committed results/report.html, rendered by a real headless browser (Debian's chromium) at laptop
width: every model's column (reference + methods) fits in the window, its header names the model and stays
on screen while scrolling, and long outputs wrap instead of running off; above them, the held-out chosen
responses token by token fit the window too. With SPO_SAVE_SCREENSHOT=1 a
screenshot of the page goes to results/figures/report.png (a plain test run leaves the tree as it was)."""

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
WIDTH, HEIGHT = 1400, 900
# offline: no network, no updates, no first-run pages; --no-sandbox because tests may run as root
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    f"--window-size={WIDTH},{HEIGHT}",
]
# Appended to a copy of the report: measures the laid-out page from inside it, then replaces the page
# with the measurements as JSON, which --dump-dom prints.
MEASURE = """<script>
(function(){
const box=e=>{const b=e.getBoundingClientRect();return {left:b.left,right:b.right,top:b.top}};
const heads=[...document.querySelectorAll('thead th[data-model]')]
  .map(th=>({text:th.textContent,...box(th)}));
const outs=[...document.querySelectorAll('tbody td:not(:first-child) .out')];
const overflowing=outs.filter(e=>e.scrollWidth>e.clientWidth+1).length;
const long=outs.reduce((a,e)=>e.textContent.length>a.textContent.length?e:a);
const tks=[...document.querySelectorAll('.tks')];
const m={innerWidth:innerWidth,pageWidth:document.documentElement.scrollWidth,heads:heads,
  outputs:outs.length,overflowing:overflowing,
  long:{chars:long.textContent.length,scrollWidth:long.scrollWidth,clientWidth:long.clientWidth,
        scrollHeight:long.scrollHeight,lineHeight:parseFloat(getComputedStyle(long).lineHeight),
        row:[...long.closest('tr').children].map(box)},
  tokenRows:tks.length,tokens:document.querySelectorAll('.tk').length,
  outlined:document.querySelectorAll('.tk.worst').length,
  tokenOverflow:tks.filter(e=>e.scrollWidth>e.clientWidth+1||e.getBoundingClientRect().right>innerWidth)
    .length};
window.scrollTo(0,document.documentElement.scrollHeight/2);
m.scrollY=scrollY;m.headTopAfterScroll=document.querySelector('thead th').getBoundingClientRect().top;
const pre=document.createElement('pre');pre.id='measure';pre.textContent=JSON.stringify(m);
document.body.replaceChildren(pre);
})();
</script>"""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(
            "chromium is not installed: this test renders results/report.html in a headless browser. "
            "Install it as root with `apt-get install -y chromium` (Debian/Ubuntu; `make install` tries)."
        )
    return path


def browse(tmp_path: Path, *args: str) -> str:
    """Run headless chromium with a throwaway profile; its stdout."""
    proc = subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def model_names() -> list[str]:
    """The runs the report shows, in the leaderboard's order (reference first)."""
    order = json.loads((RESULTS / "runs" / "compare.json").read_text())["order"]
    return [n for n in order if (RESULTS / "runs" / n / "samples.jsonl").is_file()]


def test_committed_report_reads_side_by_side_at_laptop_width(tmp_path):
    page = tmp_path / "report.html"
    page.write_text((RESULTS / "report.html").read_text() + MEASURE)
    dom = browse(tmp_path, "--dump-dom", page.as_uri())
    found = re.search(r'<pre id="measure">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    m = json.loads(html.unescape(found.group(1)))

    assert m["innerWidth"] == WIDTH and m["pageWidth"] <= WIDTH  # no horizontal scrolling
    names = model_names()
    assert len(names) >= 2 and [h["text"] for h in m["heads"]] == names
    for h in m["heads"]:
        assert 0 <= h["left"] < h["right"] <= WIDTH, h
    # the longest output's row: every cell inside the window, the text wrapped over many lines
    long = m["long"]
    assert all(0 <= c["left"] < c["right"] <= WIDTH for c in long["row"]), long["row"]
    assert long["chars"] > 1000 and long["scrollWidth"] <= long["clientWidth"] + 1
    assert long["scrollHeight"] > 10 * long["lineHeight"]
    # and no output cell at all runs wider than its column (1 px: scrollWidth rounds sub-pixel text up)
    prompts = len((RESULTS / "runs" / names[0] / "samples.jsonl").read_text().splitlines())
    assert m["outputs"] == prompts * len(names) and m["overflowing"] == 0
    # the token view: one row per trained run and held-out pair, every token shaded, the steepest fall
    # outlined once a row, nothing wider than the window
    flows = [
        json.loads((RESULTS / "runs" / n / "eval.json").read_text())["shift"].get("token_flow") for n in names
    ]
    pairs = [p for f in flows if f for p in f["pairs"]]
    assert m["tokenRows"] == len(pairs) > 0 and m["outlined"] == len(pairs)
    assert m["tokens"] == sum(len(p["tokens"]) for p in pairs) and m["tokenOverflow"] == 0
    # the header row stays on screen half-way down the page
    assert m["scrollY"] > 10 * HEIGHT and abs(m["headTopAfterScroll"]) <= 1

    shot = tmp_path / "report.png"
    browse(tmp_path, f"--screenshot={shot}", (RESULTS / "report.html").as_uri())
    assert shot.read_bytes()[:4] == b"\x89PNG"
    if os.environ.get("SPO_SAVE_SCREENSHOT") == "1":
        # a 64-colour palette keeps the committed figure small (text on flat colours loses nothing visible)
        Image.open(shot).convert("RGB").quantize(64).save(RESULTS / "figures" / "report.png", optimize=True)
