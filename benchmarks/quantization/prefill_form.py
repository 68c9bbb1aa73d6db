"""What running a split int8 artifact's prefill on its static step form (llm_ort_step) would cost the text.

    python -m benchmarks.quantization.prefill_form FP32_DIR NAME=DIR [NAME+static-prefill=DIR ...]

A study, not a runtime setting: `--ort-int8 split` prefills on the block-wise llm_ort (fp32 speed at many rows:
understanding prefill x0.91) and runs only the ODE steps on the static form (x2.17 at many rows). Here a
NAME ending in "+static-prefill" has FusedLlm's prefill swapped onto the step form for the run. Teacher-forced
over benchmarks/data/english.txt in windows of WINDOW + 1 ids: the first PREFILL in one prefill, the rest one
decode step a token (what a chat does after its prompt), scored on the decoded positions against the fp32
artifact run the same way (scoring.score). Writes benchmarks/results/int8_prefill_form.json.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from benchmarks import RESULTS
from benchmarks.quantization.peer_recipes import text_ids
from benchmarks.quantization.scoring import log_softmax, score, window_starts

PREFILL, WINDOW = 480, 960


def logprobs(path: str, static_prefill: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(log-probabilities of every decoded position, their target ids) of the artifact at `path`."""
    from jflow.runtime import llm_runner
    from jflow.runtime.pipeline import Pipeline
    fill = llm_runner.FusedLlm.fill

    def fill_on_step_form(self, cache, rows, lengths):
        graph, self.graph = self.graph, self.stepper
        try:
            return fill(self, cache, rows, lengths)
        finally:
            self.graph = graph
    if static_prefill:
        llm_runner.FusedLlm.fill = fill_on_step_form
    try:
        with Pipeline.load(path, threads=2, check_files="none") as pipe:
            ids, llm, out, targets = text_ids(pipe), pipe.llm, [], []
            for start in window_starts(len(ids), WINDOW):
                chunk = ids[start:start + WINDOW + 1]
                if len(chunk) <= PREFILL + 1:
                    continue
                cache = llm.new_cache(1, len(chunk))
                rows = [pipe.backend.download(llm.prefill(cache, [pipe.embed(chunk[:PREFILL])]))[0]]
                for token in chunk[PREFILL:-1]:
                    rows.append(pipe.backend.download(llm.decode_one(cache, pipe.embed([[token]])))[0])
                out.append(log_softmax(np.stack(rows)))
                targets += chunk[PREFILL:]
            return np.concatenate(out), np.array(targets)
    finally:
        llm_runner.FusedLlm.fill = fill


def main() -> None:
    from jflow.runtime.profile_stages import cpu_model
    if len(sys.argv) < 3 or not all("=" in a for a in sys.argv[2:]):
        sys.exit(__doc__.splitlines()[2].strip())
    ref, targets = logprobs(sys.argv[1])
    results = {"machine": {"cpu_model": cpu_model()}, "prefill": PREFILL, "window": WINDOW,
               "scored_positions": len(targets), "reference": sys.argv[1], "builds": {}}
    for pair in sys.argv[2:]:
        name, folder = pair.split("=", 1)
        got, _ = logprobs(folder, static_prefill=name.endswith("+static-prefill"))
        results["builds"][name] = {"artifact": folder, **score(ref, got, targets)}
        print(name, results["builds"][name], flush=True)
    (RESULTS / "int8_prefill_form.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
