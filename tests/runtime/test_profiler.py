"""`jflow-export profile` on the tiny artifact: every stage timed, a valid Chrome trace."""

import json

from click.testing import CliRunner

from jflow.cli import main
from jflow.runtime.pipeline import Pipeline
from jflow.runtime.profile_stages import profile, stage_plan, trace_requests
from jflow.runtime.profiler import Tracer, summarize


def test_summary_statistics():
    s = summarize([0.003, 0.001, 0.002, 0.010])
    assert s["min_ms"] == 1.0 and s["p50_ms"] == 2.5 and 7.0 < s["p90_ms"] <= 10.0 and s["runs"] == 4


def test_profile_times_every_stage(tiny_artifact):
    pipe = Pipeline.load(tiny_artifact)
    ticks = []
    report = profile(pipe, runs=2, warmup=1, steps=2, tick=lambda: ticks.append(1))
    assert list(report["stages"]) == stage_plan(pipe)
    assert len(ticks) == 2 * len(stage_plan(pipe))
    for name, stats in report["stages"].items():
        assert stats["runs"] == 2 and 0 < stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"], name
    # a whole generation costs more than one of its steps
    assert report["stages"]["generation_total"]["min_ms"] > report["stages"]["ode_step.llm"]["min_ms"]
    assert report["peak_host_rss_mib"] > 0 and report["backend"] == "onnxruntime"
    assert report["precision"] == "fp32" and "onnxruntime" in report["versions"] and report["llm_form"] == "llm_ort"
    assert report["device"]["cpu_model"] and report["threads"] is None and report["spin"] is True
    json.dumps(report)  # JSON-ready


def test_trace_is_chrome_trace_json(tiny_artifact, tmp_path):
    pipe = Pipeline.load(tiny_artifact)
    tracer = trace_requests(pipe, steps=2)
    path = tmp_path / "trace.json"
    tracer.write_chrome_trace(path, {"artifact": "tiny"})
    trace = json.loads(path.read_text())
    events = trace["traceEvents"]
    assert all(e["ph"] == "X" and e["dur"] >= 0 and e["ts"] >= 0 and isinstance(e["pid"], int) for e in events)
    names = [e["name"] for e in events]
    assert names.count("graph.gen_decoder") == 2 and {"graph.siglip", "graph.vae_decoder"} <= set(names)
    gen = next(e for e in events if e["name"] == "request.generate")
    inside = [e for e in events if e["name"].startswith("graph.") and gen["ts"] <= e["ts"] <= gen["ts"] + gen["dur"]]
    assert {e["name"] for e in inside} == {"graph.llm_ort", "graph.gen_encoder", "graph.gen_decoder",
                                           "graph.vae_decoder"}
    assert pipe.tracer is None  # tracing ends with the block
    pipe.generate_latents("a cat", steps=1, seed=0)
    assert len(tracer.events()) == len(events)


def test_tracer_spans_nest_in_time():
    tracer = Tracer()
    with tracer.span("outer"):
        with tracer.span("inner", k=1):
            pass
    inner, outer = tracer.events()
    assert outer["ts"] <= inner["ts"] and inner["ts"] + inner["dur"] <= outer["ts"] + outer["dur"]
    assert inner["args"] == {"k": 1}


def test_profile_cli_writes_json_and_trace(tiny_artifact, tmp_path):
    result = CliRunner().invoke(main, ["profile", str(tiny_artifact), "--runs", "1", "--warmup", "0", "--steps", "1",
                                       "--json", str(tmp_path / "p.json"), "--trace", str(tmp_path / "t.json")])
    assert result.exit_code == 0, result.output
    assert "ode_step.llm" in result.output and "peak host RSS" in result.output
    assert json.loads((tmp_path / "p.json").read_text())["stages"]["vae_decode"]["min_ms"] > 0
    assert json.loads((tmp_path / "t.json").read_text())["traceEvents"]
