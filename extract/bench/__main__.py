"""`python -m extract.bench NAME [options]`: the benchmarks, one module each (see `extract/bench/__init__.py`)."""

from __future__ import annotations

import argparse
import os

from extract import bench
from extract.bench import (audio_caption, av_sync, data, export, generation, grounding_sam, internvl, llava_video, pipeline,
                           run, select, synchformer, vlm_caption)

BENCHMARKS = {  # name: (its module's options, its measurement, what it measures)
    "data": (data.add_arguments, data.bench_data, "streaming decode vs in-memory floor vs extract-to-disk"),
    "av_sync": (av_sync.add_arguments, av_sync.bench_av_sync, "av_sync accuracy over generated flash/click clips, and clips/s"),
    "select": (select.add_arguments, select.bench_select,
               "extract.select's clips/s and peak memory, against reading the input shards"),
    "export": (export.add_arguments, export.bench_export, "export's peak memory against the size of the run"),
    "pipeline": (pipeline.add_arguments, pipeline.bench_pipeline,
                 "one pass for several heads vs single runs; main-process time per clip"),
    "generation": (generation.add_arguments, generation.bench_generation,
                   "the generation engine against transformers' generate, long-tailed captions"),
    "run": (run.add_arguments, run.bench_run, "[probe,llava_video] through run(cfg) with the full-size random model attached"),
    "llava_video": (llava_video.add_arguments, llava_video.bench_llava_video,
                    "llava_video generation speed and its floor per batch size and attention kernel"),
    "grounding_sam": (grounding_sam.add_arguments, grounding_sam.bench_grounding_sam, "grounding_sam keyframes/s per batch"),
    "internvl": (internvl.add_arguments, internvl.bench_internvl, "internvl keyframes/s per batch"),
    "vlm_caption": (vlm_caption.add_arguments, vlm_caption.bench_vlm_caption,
                    "vlm_caption clips/hour, engine against generate (Qwen3-VL-8B's shape, random weights, with --size full)"),
    "audio_caption": (audio_caption.add_arguments, audio_caption.bench_audio_caption,
                      "audio_caption clips/s per batch (released size, random weights)"),
    "synchformer": (synchformer.add_arguments, synchformer.bench_synchformer,
                    "av_sync's synchformer method: clips/s per batch (released size, random weights)"),
}


def main() -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")  # the runs' progress bars would interleave with the tables
    parser = argparse.ArgumentParser(prog="python -m extract.bench", description=bench.__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    for name, (add_arguments, _, what) in BENCHMARKS.items():
        add_arguments(sub.add_parser(name, help=what))
    args = parser.parse_args()
    BENCHMARKS[args.what][1](args)


if __name__ == "__main__":
    main()
