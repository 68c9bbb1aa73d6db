"""The page of `jflow-export serve`, in a real headless browser: Debian's chromium, driven by playwright.

    apt-get install -y chromium && pip install -c constraints-cpu.txt playwright
    python -m benchmarks.serving.serve_page_check ARTIFACT [--chromium /usr/bin/chromium]
        [--screenshot docs/serve_page.png]

Starts the real server on 127.0.0.1 (a free port), loads `/`, draws a picture (the Draw button) and checks it is
the Pipeline's own image byte for byte; then drops a photograph on the page (a real drop event carrying a
File), asks the question and checks that the answer arrived in several pieces and equals the Pipeline's. Takes
a screenshot of the page at the end. playwright's own browser download is not used (it needs a host other than
the package registries); any chromium binary works. Writes benchmarks/results/serve_page_check.json.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import RESULTS, ROOT
from benchmarks.serving.serve_load import machine, start_server

QUESTION = "What is in this picture?"
DROP = """async (b64) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], "photo.png", { type: "image/png" }));
  document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true,
                                                                        cancelable: true }));
}"""
# Every change to the answer box while it streams, with the time, so the check can tell pieces from one block.
WATCH = """() => {
  window.answerUpdates = [];
  new MutationObserver(() => window.answerUpdates.push([performance.now(), document.getElementById("answer")
    .textContent.length])).observe(document.getElementById("answer"), { childList: true, characterData: true,
                                                                          subtree: true });
}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("artifact")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--screenshot", default=str(ROOT / "docs" / "serve_page.png"))
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from jflow.runtime.pipeline import Pipeline

    photo = Image.fromarray(np.random.default_rng(7).integers(0, 256, size=(200, 300, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    photo_b64 = base64.b64encode(buffer.getvalue()).decode()
    with Pipeline.load(args.artifact) as pipe:
        drawn = io.BytesIO()
        pipe.generate("a red cube on a wooden table", steps=args.steps, seed=0)[0].save(drawn, format="PNG")
        expected_answer = pipe.answer(photo, QUESTION)
    log = Path(tempfile.mkdtemp()) / "server.log"
    proc, url = start_server(args.artifact, 8, log)  # the server's default queue
    checks = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1100, "height": 640})
            page.goto(url + "/")
            page.wait_for_function("document.getElementById('status').textContent.includes('ready')", timeout=30000)
            checks["page_loaded_and_health_ready"] = True
            page.fill("#steps", str(args.steps))
            page.fill("#seed", "0")
            started = time.perf_counter()
            page.click("#draw")
            page.wait_for_selector("#drawn img", timeout=120000)
            checks["draw_seconds"] = round(time.perf_counter() - started, 2)
            src = page.get_attribute("#drawn img", "src")
            checks["drawn_image_equals_pipeline_png"] = base64.b64decode(src.split(",", 1)[1]) == drawn.getvalue()
            page.evaluate(DROP, photo_b64)
            page.wait_for_selector("#drop img", timeout=10000)
            checks["dropped_picture_shown"] = page.get_attribute("#drop img", "src").startswith("data:image/png")
            page.evaluate(WATCH)
            page.click("#ask")
            page.wait_for_function("document.getElementById('askInfo').textContent.startsWith('done')",
                                   timeout=120000)
            answer = page.text_content("#answer")
            updates = page.evaluate("window.answerUpdates")
            checks["answer_equals_pipeline"] = answer == expected_answer
            checks["answer_updates_while_streaming"] = len(updates)
            checks["answer_arrived_in_pieces"] = len({length for _, length in updates}) > 2
            checks["finish"] = page.text_content("#askInfo")
            Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.screenshot, full_page=True)
            checks["browser"] = browser.version
            browser.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        checks["server_exit_code"] = proc.wait(60)
    ok = all(checks[k] is True for k in ("page_loaded_and_health_ready", "drawn_image_equals_pipeline_png",
                                          "dropped_picture_shown", "answer_equals_pipeline",
                                          "answer_arrived_in_pieces")) and checks["server_exit_code"] == 0
    report = {"artifact": args.artifact, "steps": args.steps, "machine": machine(), "checks": checks, "all_passed": ok,
              "screenshot": str(Path(args.screenshot).resolve().relative_to(ROOT))}
    out = RESULTS / "serve_page_check.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if report["all_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
