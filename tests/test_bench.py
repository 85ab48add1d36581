"""The benchmarks: the analytic floor counts the same weights the real modules hold, and the benchmarks run."""

import re

import pytest
import torch

from extract.bench.floors import decoder_sizes, llava_floor
from extract.models.random_models import QWEN2_7B, QWEN3_8B


def _built(config: dict):
    from transformers import AutoConfig, AutoModelForCausalLM

    text = AutoConfig.for_model(**config)
    with torch.device("meta"):
        return text, AutoModelForCausalLM.from_config(text)


def test_decoder_weights_match_the_modules():
    for config in (QWEN2_7B, QWEN3_8B):
        text, model = _built(config)
        matrices = sum(p.numel() for name, p in model.model.layers.named_parameters() if p.dim() == 2)
        sizes = decoder_sizes(text)
        assert abs(sizes["layer_params"] - matrices) / matrices < 1e-6, config["model_type"]
        assert sizes["head_params"] == model.lm_head.weight.numel()


def test_decode_floor_is_the_weight_reads_when_bandwidth_bound():
    from transformers import LlavaOnevisionConfig

    config = LlavaOnevisionConfig(text_config=QWEN2_7B)
    sizes = decoder_sizes(config.text_config)
    prefill, decode = llava_floor(config, batch=1, prompt_tokens=100, frames=1, new_tokens=10, peaks=(1e30, 1e12))
    weights = (sizes["layer_params"] + sizes["head_params"]) * 2
    kv = sum(100 + step for step in range(10)) * sizes["layers"] * 2 * sizes["kv_dim"] * 2
    assert decode * 1e12 == pytest.approx(10 * weights + kv, rel=1e-9)
    assert prefill > 0


def test_the_pipeline_benchmarks_stand_in_heads_caption_every_clip(tmp_path):
    """The stand-in model answers what both generation paths of llava_video ask of a model (each clip `new_tokens`
    copies of its token), so the benchmark's timings are of clips the head finished, not of errors."""
    from conftest import make_clip, read_records, write_shard
    from extract.bench.common import run_heads
    from extract.bench.pipeline import _stand_in_llava_heads

    shard = write_shard(tmp_path / "s-000.tar.gz", [(f"v{i} (0-1).mp4", make_clip(1.0, size="64x48", rate=8)) for i in range(3)])
    for head in _stand_in_llava_heads(wait_per_clip_s=0.0):
        _, summary = run_heads({head.name: {"checkpoint": "stand-in", "num_frames": 4, "engine": "generate"}}, [str(shard)],
                               tmp_path / head.name, workers=0, batch_size=2)
        records = read_records(tmp_path / head.name / head.name)
        assert [(r["status"], r["error"]) for r in records] == [("ok", None)] * 3, head.name
        assert all(r["num_tokens"] == 8 for r in records)  # StandInModel's 8 tokens, none of them an end token


@pytest.mark.parametrize("benchmark", ["internvl", "llava_video", "vlm_caption"])
def test_a_captioning_benchmark_runs_with_its_defaults_on_a_tiny_model(benchmark, monkeypatch, capsys):
    """`python -m extract.bench internvl` (as `llava_video`, `vlm_caption`) with its default --size tiny, on a tiny
    random model."""
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", ["extract.bench", benchmark, "--batches", "1", "--new-tokens", "2",
                                      *(["--generate-batches", "1"] if benchmark == "llava_video" else [])])
    runpy.run_module("extract.bench", run_name="__main__", alter_sys=True)
    printed = capsys.readouterr().out
    assert "TINY random model" in printed
    assert ("keyframes/s, engine against generate: 1 clips" if benchmark == "internvl" else "best clips/hour: engine") in printed
    if benchmark == "llava_video":  # where one clip's prefill goes, part by part
        for part in ("vision tower + projector + pooling", "splice into the prompt", "language model (engine prefill)"):
            assert re.search(rf"  {re.escape(part)} +\d+\.\d{{3}} s", printed), printed[-1500:]
    # the engine's rows say whether graphs ran, its slots, its decode steps and its attention kernel

    assert re.search(r"engine: CUDA graphs no \(eager: no CUDA\), slots \d+, decode steps \d+, prefills \d+, attention "
                     r"slot_decode_attention.*, KV read \d+\.\d\dx the busy slots' own lengths", printed), printed[-1500:]


def test_the_generation_benchmark_says_how_its_engine_ran(monkeypatch, capsys):
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", ["extract.bench", "generation", "--requests", "4", "--slots", "2", "--cap", "6"])
    runpy.run_module("extract.bench", run_name="__main__", alter_sys=True)
    printed = capsys.readouterr().out
    steps = int(printed.split("engine, 2 slots")[1].split()[0])
    assert f"engine: CUDA graphs no (eager: no CUDA), slots 2, decode steps {steps}, prefills " in printed


def test_each_benchmark_runs_its_own_modules_measurement():
    """`python -m extract.bench NAME` dispatches to extract/bench/NAME.py, and every module with options is a benchmark."""
    import pkgutil

    import extract.bench
    from extract.bench.__main__ import BENCHMARKS

    with_options = {m.name for m in pkgutil.iter_modules(extract.bench.__path__)
                    if hasattr(__import__(f"extract.bench.{m.name}", fromlist=["_"]), "add_arguments")}
    assert set(BENCHMARKS) == with_options
    for name, (add_arguments, measure, _) in BENCHMARKS.items():
        assert add_arguments.__module__ == measure.__module__ == f"extract.bench.{name}"
        assert measure.__name__ == f"bench_{name}"


def test_the_model_benchmarks_options_parse_to_their_types():
    import argparse

    from extract.bench.__main__ import BENCHMARKS

    for name in ("llava_video", "internvl", "grounding_sam"):
        parser = argparse.ArgumentParser()
        BENCHMARKS[name][0](parser)
        args = parser.parse_args(["--size", "full", "--layers", "2", "--batches", "1,2"])
        assert (args.size, args.layers, args.batches) == ("full", 2, "1,2"), name


def test_a_given_checkpoint_is_the_model_a_captioning_benchmark_times(tmp_path):
    from types import SimpleNamespace

    from extract.bench.common import captioning_head
    from extract.models.random_models import save_tiny_llava_video

    folder = str(save_tiny_llava_video(tmp_path / "given"))
    args = SimpleNamespace(checkpoint=folder, size="tiny", layers=None)
    never = lambda *unused: pytest.fail("built another model than the one given")  # noqa: E731
    head, what = captioning_head("llava_video", args, str(tmp_path / "scratch"), torch.device("cpu"), never, "full", never,
                                 "tiny", max_new_tokens=2)
    assert what == folder and head.model_id == folder and not (tmp_path / "scratch").exists()


def test_the_stand_in_model_waits_its_time_for_each_clip():
    import time

    from extract.bench.pipeline import StandInModel

    model = StandInModel(wait_per_clip_s=0.02, new_tokens=3, token_id=7, eos_id=1, vocab_rows=10)
    started = time.perf_counter()
    out = model.generate(inputs_embeds=torch.zeros(4, 5, 8), max_new_tokens=3)
    assert time.perf_counter() - started >= 4 * 0.02 and model.waited_s == pytest.approx(0.08)
    assert out.sequences.tolist() == [[7, 7, 7]] * 4
