"""Side-by-side measurements, printed as ratios from one run on the same inputs.

    python -m extract.bench data [--clips 48] [--shards 4] [--workers 0,1,2]
    python -m extract.bench av_sync
    python -m extract.bench generation [--size full] [--requests 32] [--slots 8] [--cap 1024]
    python -m extract.bench run [--input DIR] [--layers N]
    python -m extract.bench select [--clips 20000,200000]
    python -m extract.bench llava_video [--size full] [--checkpoint DIR] [--frames 64] [--new-tokens 32] [--batches 1,2,4,8,16]
    python -m extract.bench grounding_sam [--size full] [--detector DIR --segmenter DIR] [--batches 1,2,4]
    python -m extract.bench internvl [--size full] [--checkpoint DIR] [--new-tokens 32] [--batches 1,2,4]
    python -m extract.bench audio_caption [--size full|tiny] [--seconds 10] [--caption-tokens 20] [--batches 1,4,16]

`data`: the streaming path (tar.gz -> clip member -> N decoded frames + 16 kHz audio, in DataLoader
workers behind the decode watchdog) against the same decode from bytes already in memory (the
floor for this decoder) and against the naive way (extract the archives to disk, then open each
file), with each worker count.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import tarfile
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from extract.data import ClipItem, ShardPlan, as_list, make_loader, resolve_shards
from extract.decode import Media, MediaSpec, decode_media, sample_indices
from extract.heads import Head
from extract.runner import Limits
from extract.synthetic import lavfi_clip

SPEC = MediaSpec(num_frames=16, size=(224, 224), audio=True)
LIMITS = Limits(decode_timeout=60, decode_memory_bytes=8 << 30, max_member_bytes=4 << 30, max_decoded_bytes=4 << 30)


def make_shards(folder: Path, clips: int, shards: int, seconds: float) -> list[str]:
    patterns = ("testsrc2", "smptebars", "rgbtestsrc", "testsrc")
    distinct = [lavfi_clip(seconds, patterns[i], size="640x360", rate=30, tone=200 + 40 * i, preset="veryfast") for i in range(4)]
    urls = []
    for s in range(shards):
        path = folder / f"bench-{s:03d}.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            for c in range(s, clips, shards):
                data = distinct[c % 4]
                info = tarfile.TarInfo(f"bench.video.{c} ({c}.0-{c + seconds}).mp4")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        urls.append(str(path))
    return urls


class _Decode(torch.utils.data.Dataset):
    """Map-style dataset of clips that are already bytes (or files on disk)."""

    def __init__(self, sources: list):
        self.sources = sources

    def __len__(self):
        return len(self.sources)

    def __getitem__(self, index):
        source = self.sources[index]
        data = Path(source).read_bytes() if isinstance(source, Path) else source
        return decode_media(data, SPEC)


class _DecodeOnly(Head):
    """A head that only asks for the data benchmark's view."""

    name = "decode"

    def __init__(self, spec: MediaSpec):
        self.media_spec = spec


def _count(loader) -> int:
    return sum(1 for batch in loader for item in batch if isinstance(item, Media) or (isinstance(item, ClipItem) and item.media))


def time_streaming(urls, workers: int, limits: Limits = LIMITS) -> tuple[int, float]:
    started = time.perf_counter()
    plan = ShardPlan({url: {"decode": set()} for url in urls})
    count = _count(make_loader(plan, {"decode": _DecodeOnly(SPEC)}, limits, batch_size=4, num_workers=workers))
    return count, time.perf_counter() - started


def time_in_memory(blobs: list[bytes], workers: int) -> tuple[int, float]:
    started = time.perf_counter()
    loader = torch.utils.data.DataLoader(_Decode(blobs), batch_size=4, num_workers=workers, collate_fn=as_list)
    return _count(loader), time.perf_counter() - started


def time_extract_then_open(urls, workers: int, scratch: Path) -> tuple[int, float]:
    started = time.perf_counter()
    target = Path(tempfile.mkdtemp(dir=scratch))
    files = []
    for url in urls:
        with tarfile.open(url) as tar:
            tar.extractall(target, filter="data")
            files += [target / m.name for m in tar.getmembers()]
    loader = torch.utils.data.DataLoader(_Decode(files), batch_size=4, num_workers=workers, collate_fn=as_list)
    return _count(loader), time.perf_counter() - started


def bench_data(args) -> None:
    workers = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        urls = make_shards(scratch, args.clips, args.shards, args.seconds)
        blobs = []
        for url in urls:
            with tarfile.open(url) as tar:
                blobs += [tar.extractfile(m).read() for m in tar.getmembers()]
        decode_media(blobs[0], SPEC)  # load ffmpeg's libraries before timing
        print(f"# extract.bench data: {args.clips} clips of {args.seconds:g}s 640x360 h264+aac in {args.shards} tar.gz shards; "
              f"{SPEC.num_frames} frames at 224x224 + 16 kHz audio per clip")
        print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
        unguarded = Limits(0, LIMITS.decode_memory_bytes, LIMITS.max_member_bytes, LIMITS.max_decoded_bytes)
        print("# streaming: the real path, behind the decode watchdog; no watchdog: the same with decode_timeout=0")
        print(f"{'workers':>7}  {'in-memory floor':>16}  {'streaming':>10}  {'no watchdog':>11}  {'extract+open':>12}  "
              f"{'stream/floor':>12}  {'stream/extract':>14}")
        for w in workers:
            results = {}
            for name, fn in (("floor", partial(time_in_memory, blobs)), ("stream", partial(time_streaming, urls)),
                             ("unguarded", partial(time_streaming, urls, limits=unguarded)),
                             ("extract", partial(time_extract_then_open, urls, scratch=scratch))):
                count, seconds = fn(w)
                assert count == args.clips, (name, count)
                results[name] = count / seconds
            print(f"{w:>7}  {results['floor']:>12.1f} c/s  {results['stream']:>6.1f} c/s  {results['unguarded']:>7.1f} c/s  "
                  f"{results['extract']:>8.1f} c/s  {results['stream'] / results['floor']:>12.2f}  {results['stream'] / results['extract']:>14.2f}")


def bench_av_sync(args) -> None:
    """Accuracy of the av_sync head over generated flash/click clips, and its speed on this machine."""
    from extract.heads import Clip, build
    from extract.synthetic import flash_click_clip

    head = build("av_sync", {})
    offsets = (-0.5, -0.25, -0.1, -0.03, 0.0, 0.03, 0.1, 0.25, 0.5)
    noise_levels = (-40.0, -20.0)
    print(f"# extract.bench av_sync: 6 s clips, 4 flashes with clicks at each offset in {offsets} s, "
          f"background noise {noise_levels} dBFS; method {head.method}")
    print(f"{'fps':>4}  {'clips':>5}  {'mean |err| ms':>13}  {'max |err| ms':>12}  {'max |err| frames':>16}  {'within 1 frame':>14}  {'clips/s':>7}")
    for fps in (24, 25, 30, 50, 60):
        clips = [flash_click_clip(fps, offset, noise_db=noise, seed=i) for i, (offset, noise) in
                 enumerate((o, n) for o in offsets for n in noise_levels)]
        truths = [offset for offset in offsets for _ in noise_levels]
        started = time.perf_counter()
        estimates = [head.infer([Clip("k", "v", 0.0, 6.0, decode_media(c, head.media_spec))])[0] for c in clips]
        elapsed = time.perf_counter() - started
        errors = [abs((e.fields["offset_s"] if e.status == "ok" else float("inf")) - t) for e, t in zip(estimates, truths)]
        within = sum(err <= 1 / fps for err in errors) / len(errors)
        print(f"{fps:>4}  {len(clips):>5}  {1000 * sum(errors) / len(errors):>13.1f}  {1000 * max(errors):>12.1f}  "
              f"{max(errors) * fps:>16.2f}  {100 * within:>13.0f}%  {len(clips) / elapsed:>7.1f}")


# ---------------------------------------------------------------------------- pipeline


def _run_heads(heads: dict, urls: list[str], output_dir: Path, workers: int, batch_size: int) -> tuple[float, dict]:
    """(wall seconds, summary of the first head) of one in-process run of these heads over these shards."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from extract.cli import CONF
    from extract.runner import run

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"output_dir={output_dir}", f"num_workers={workers}",
                                                       f"batch_size={batch_size}", "wandb.mode=disabled"])
    with open_dict(cfg):
        cfg.shards = urls
        cfg.model = heads
    started = time.perf_counter()
    summary = run(cfg)
    return time.perf_counter() - started, summary if "this_run" in summary else next(iter(summary.values()))


class StandInModel:
    """Stands in for a captioning model on the device: each call waits a fixed time per clip (the GPU's
    share, spent asleep so the process uses no CPU meanwhile), then says `new_tokens` tokens."""

    def __init__(self, wait_per_clip_s: float, new_tokens: int, token_id: int, eos_id: int):
        from types import SimpleNamespace

        self.wait_per_clip_s, self.new_tokens, self.token_id = wait_per_clip_s, new_tokens, token_id
        self.dtype = torch.float32
        self.config = SimpleNamespace(_commit_hash=None)
        self.generation_config = SimpleNamespace(eos_token_id=eos_id)
        self.waited_s = 0.0

    def get_input_embeddings(self):
        return lambda ids: torch.zeros((*ids.shape, 8), device=ids.device)

    def generate(self, inputs_embeds, max_new_tokens, **unused):
        from types import SimpleNamespace

        rows = inputs_embeds.shape[0]
        if inputs_embeds.is_cuda:
            torch.cuda.synchronize()  # the inputs' copies and normalising are done: what follows is the model's share
        time.sleep(self.wait_per_clip_s * rows)
        self.waited_s += self.wait_per_clip_s * rows
        said = torch.full((rows, self.new_tokens), self.token_id, dtype=torch.long, device=inputs_embeds.device)
        return SimpleNamespace(sequences=said, scores=[None] * self.new_tokens)

    def compute_transition_scores(self, sequences, scores, normalize_logits=True):
        return torch.full((sequences.shape[0], self.new_tokens), -0.5, device=sequences.device)


def _stand_in_llava_heads(wait_per_clip_s: float):
    """Two llava_video heads with the full-size preprocessing (64 frames at 384x384, 13,440 visual tokens) and a
    stand-in model: one preparing in the workers (this project's way), one tokenising and normalising in the main
    loop (the way before)."""
    from extract import random_models
    from extract.heads import register
    from extract.heads.llava_video import LlavaVideo

    class StandInLlava(LlavaVideo):
        name = "llava_video_stand_in"

        def open(self, device):
            tokenizer = random_models.tiny_tokenizer()
            self._use(tokenizer, random_models.llava_video_config(tokenizer), torch.float32, device)

        def load(self, device):
            self.model = StandInModel(wait_per_clip_s, 8, self.video_token, self.tokenizer.eos_token_id)

        def visual_tokens(self, pixel_values):
            return torch.zeros((len(pixel_values) * self.tokens_per_frame, 8), device=pixel_values.device)

    class StandInLlavaMainLoop(StandInLlava):
        name = "llava_video_stand_in_main_loop"
        frames_in_model_step = True

        def prepare(self, clip):
            return None  # nothing in the workers: the frames travel to the main process

        def infer(self, clips):
            self.normalise_on_device = False  # the processor's work, on the CPU
            for clip in clips:
                clip.prepared = LlavaVideo.prepare(self, clip)  # in the main loop
            return super().infer(clips)

    return register(StandInLlava), register(StandInLlavaMainLoop)


def bench_pipeline(args) -> None:
    """One pass for several heads against the single-head runs it replaces; then the main process's own
    time per clip outside the model call, with llava_video's processor in the workers or in the main loop."""
    from extract.random_models import save_tiny_llava_video

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        urls = resolve_shards(args.input, None) if args.input else make_shards(scratch, args.clips, args.shards, args.seconds)
        tiny = str(save_tiny_llava_video(scratch / "tiny-llava"))
        llava = {"checkpoint": tiny, "max_new_tokens": 8}
        what = f"the shards in {args.input}" if args.input else \
            f"{args.clips} clips of {args.seconds:g}s 640x360 h264+aac in {args.shards} tar.gz shards"
        print(f"# extract.bench pipeline: {what}, {args.workers} workers, batches of {args.batch_size}")
        print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
              f"{time.strftime('%Y-%m-%d')}; llava_video here is a TINY random model (40x40 frames)")
        print(f"{'heads':<34}  {'single runs':>11}  {'one pass':>9}  {'one/single':>10}")
        for names in (("probe", "av_sync"), ("probe", "av_sync", "llava_video")):
            options = {name: (llava if name == "llava_video" else {}) for name in names}
            singles = sum(_run_heads({name: options[name]}, urls, scratch / f"single-{name}-{len(names)}", args.workers,
                                     args.batch_size)[0] for name in names)
            together, _ = _run_heads(options, urls, scratch / f"pass-{len(names)}", args.workers, args.batch_size)
            print(f"{'[' + ','.join(names) + ']':<34}  {singles:>9.1f} s  {together:>7.1f} s  {together / singles:>10.2f}")

        wait_s = args.model_wait_ms / 1000
        in_workers, in_main = _stand_in_llava_heads(wait_s)
        print(f"# llava_video with its full-size preprocessing ({args.frames} frames at 384x384) and a stand-in model that waits "
              f"{args.model_wait_ms:g} ms a clip: the main process's own time per clip, outside the model call and the wait for data")
        print(f"{'processor runs in':<18}  {'main own ms/clip':>16}  {'main CPU ms/clip':>16}  {'waiting for data':>16}  {'clips/s':>7}")
        for where, head in (("the main loop", in_main), ("the workers", in_workers)):
            _, summary = _run_heads({head.name: {"checkpoint": "stand-in", "num_frames": args.frames, "engine": "generate"}}, urls,
                                    scratch / f"stand-in-{head.name}", args.workers, args.batch_size)
            [rank] = summary["ranks"]
            timing, clips = rank["timing"], rank["clips_read"]
            waited = wait_s * clips
            own = (timing["loop_s"] - timing["waiting_for_data_s"] - waited) / clips
            print(f"{where:<18}  {1000 * own:>16.1f}  {1000 * timing['loop_cpu_s'] / clips:>15.1f}  "
                  f"{timing['waiting_for_data_s']:>14.1f} s  {clips / timing['loop_s']:>7.2f}")


def _random_llava_head(layers: int | None):
    """llava_video with LLaVA-Video-7B's architecture and random weights built on the device when the run loads it."""
    from extract import random_models
    from extract.heads import register, resolve_dtype
    from extract.heads.llava_video import LlavaVideo

    class RandomLlava(LlavaVideo):
        name = "llava_video_random_weights"

        def open(self, device):
            tokenizer = random_models.tiny_tokenizer()
            self._use(tokenizer, random_models.llava_video_config(tokenizer, layers), resolve_dtype("auto", device), device)

        def load(self, device):
            self.attach(*random_models.llava_video(device, resolve_dtype("auto", device), "sdpa", layers), device)

    return register(RandomLlava)


def bench_run(args) -> None:
    """One run of [probe, llava_video] through run(cfg), the full-size random model attached: clips/hour end to end
    and the main loop's time waiting for data."""
    head = _random_llava_head(args.layers)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        urls = resolve_shards(args.input, None) if args.input else make_shards(scratch, args.clips, args.shards, args.seconds)
        options = {"checkpoint": "random weights", "max_new_tokens": args.new_tokens, **({"batch_size": args.batch_size} if args.batch_size else {})}
        wall, summary = _run_heads({"probe": {}, head.name: options}, urls, scratch / "out", args.workers, 4)
    [rank] = summary["ranks"]
    timing, clips = rank["timing"], rank["clips_read"]
    print(f"# extract.bench run: '+model=[probe,llava_video]' through run(cfg), LLaVA-Video-7B architecture with RANDOM weights"
          f"{_cut(args.layers)}, {args.new_tokens} new tokens a clip (random weights never end one), {args.workers} workers, "
          f"on {_device_name(torch.device('cuda' if torch.cuda.is_available() else 'cpu'))}, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d')}")
    print(f"{'clips':>5}  {'wall s':>7}  {'loop s':>7}  {'clips/hour (loop)':>17}  {'waiting for data':>16}")
    print(f"{clips:>5}  {wall:>7.1f}  {timing['loop_s']:>7.1f}  {3600 * clips / timing['loop_s']:>17.0f}  "
          f"{timing['waiting_for_data_s']:>14.1f} s")


# ---------------------------------------------------------------------------- export


def _fake_output(folder: Path, clips: int, per_shard: int, inputs: Path | None = None, media_bytes: int = 4096) -> None:
    """An output folder of probe and av_sync records as a run writes them (made-up values of the declared types); with
    `inputs`, the input shards too, each clip a member of `media_bytes` bytes that passes the early refusal."""
    from extract.clips import clip_key
    from extract.heads import head_class
    from extract.records import BaseRecord, head_record
    from extract.schema import dataset_card
    from extract.writer import OutputWriter

    rng = np.random.default_rng(0)
    for name in ("probe", "av_sync"):
        head = head_class(name)
        writer = OutputWriter(folder / name, dataset_card(head))
        for first in range(0, clips, per_shard):
            url = str((inputs or Path("/data/shards")) / f"s-{first // per_shard:05d}.tar")
            if inputs is not None and name == "probe":
                media = b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * (media_bytes // 256)
                with tarfile.open(url, "w") as tar:
                    for i in range(first, min(first + per_shard, clips)):
                        info = tarfile.TarInfo(f"video{i // 7} ({i % 7}-{i % 7 + 1}).mp4")
                        info.size = len(media)
                        tar.addfile(info, io.BytesIO(media))
            for i in range(first, min(first + per_shard, clips)):
                base = BaseRecord(key=clip_key(f"video{i // 7}", float(i % 7), float(i % 7 + 1)), video_id=f"video{i // 7}", start=float(i % 7), end=float(i % 7 + 1),
                                  duration=1.0, in_csv=True, shard=url, member=f"video{i // 7} ({i % 7}-{i % 7 + 1}).mp4",
                                  head=name, model=None, status="ok", error_type=None, error=None)
                if name == "probe":
                    fields = {"container": "mp4 (isom)", "duration_s": 1.0, "has_audio": True,
                              "video_streams": [{"index": 0, "codec": "h264", "width": 640, "height": 360, "fps": 30.0, "num_frames": 30}],
                              "stats": {"frames_sampled": 4, "frame_times": [0.1, 0.4, 0.6, 0.9], "mean_luma": float(rng.uniform(0, 255)),
                                        "motion_energy": float(rng.uniform(0, 20)), "scene_cuts": 0, "audio_rms_dbfs": -20.0}}
                else:
                    fields = {"offset_s": float(rng.normal(0, 0.1)), "confidence": float(rng.uniform()), "method": "onset_xcorr"}
                writer.write(url, head_record(base, head.fields, fields), {})
            writer.finish(url, None, [], name)


def bench_export(args) -> None:
    """Peak memory of `extract.export` against the size of the run: it reads one shard of every head at a time."""
    import subprocess
    import sys

    print(f"# extract.bench export: probe + av_sync records, {args.per_shard} clips a shard, Parquet; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print(f"{'clips':>8}  {'shards':>6}  {'output':>9}  {'table':>8}  {'export s':>8}  {'peak memory':>11}")
    for clips in [int(c) for c in args.clips.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "out"
            _fake_output(folder, clips, args.per_shard)
            size = sum(p.stat().st_size for p in folder.rglob("*.tar"))
            measure = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
                       "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
            started = time.perf_counter()
            result = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "extract.export", str(folder)],
                                    capture_output=True, text=True, check=True)
            elapsed = time.perf_counter() - started
            peak = int(result.stdout.split()[-1]) * 1024
            table = (folder / "clips.parquet").stat().st_size
            print(f"{clips:>8}  {-(-clips // args.per_shard):>6}  {size / 2**20:>6.0f} MiB  {table / 2**20:>5.1f} MiB  "
                  f"{elapsed:>8.1f}  {peak / 2**20:>7.0f} MiB")


def bench_select(args) -> None:
    """extract.select choosing half of a run's clips: clips/s and peak memory, against the query alone and against a
    pass that only reads the input shards (what select cannot do without)."""
    import subprocess
    import sys

    import duckdb

    from extract.data import ClipItem, ShardPlan, read_members
    from extract.export import export, head_folders, shard_records, shard_stems

    where = '"probe.stats.mean_luma" < 127.5'  # about half: the luma is uniform over 0 to 255
    print(f"# extract.bench select: probe + av_sync records, {args.per_shard} clips a shard, input members of {args.media_kb} KiB, "
          f"choosing {where}; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print(f"{'clips':>8}  {'chosen':>7}  {'query s':>7}  {'read inputs s':>13}  {'read records s':>14}  {'start-up s':>10}  "
          f"{'select s':>8}  {'clips/s':>8}  {'select/(inputs+records)':>23}  {'peak memory':>11}")
    for clips in [int(c) for c in args.clips.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            folder, inputs = Path(tmp) / "out", Path(tmp) / "in"
            inputs.mkdir()
            _fake_output(folder, clips, args.per_shard, inputs, args.media_kb * 1024)
            export(folder, folder / "clips.parquet", progress=False)
            started = time.perf_counter()
            [(chosen,)] = duckdb.sql(f"select count(*) from read_parquet('{folder / 'clips.parquet'}') where {where}").fetchall()
            query = time.perf_counter() - started
            started = time.perf_counter()
            for shard in sorted(inputs.glob("*.tar")):
                plan = ShardPlan({str(shard): {"select": set()}})
                sum(isinstance(item, ClipItem) for item in read_members([{"url": str(shard)}], plan, 1 << 40))
            reading = time.perf_counter() - started
            started = time.perf_counter()
            folders = head_folders(folder)
            for stem in shard_stems(folders):
                shard_records(stem, folders)
            records = time.perf_counter() - started
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import extract.select, extract.export, extract.data, duckdb"], check=True)
            startup = time.perf_counter() - started
            measure = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
                       "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
            started = time.perf_counter()
            result = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "extract.select", str(folder), "--where", where,
                                     "--out", str(Path(tmp) / "chosen")], capture_output=True, text=True, check=True)
            elapsed = time.perf_counter() - started
            peak = int(result.stdout.split()[-1]) * 1024
            print(f"{clips:>8}  {chosen:>7}  {query:>7.2f}  {reading:>13.1f}  {records:>14.1f}  {startup:>10.1f}  {elapsed:>8.1f}  "
                  f"{clips / elapsed:>8.0f}  {(elapsed - startup) / (reading + records):>23.2f}  {peak / 2**20:>7.0f} MiB")


# dense bf16 tensor-core FLOP/s and HBM bytes/s from the vendors' datasheets, matched on the device name
DEVICE_PEAKS = [("H200", 989e12, 4.8e12), ("H100 NVL", 835e12, 3.9e12), ("H100 PCIe", 756e12, 2.0e12),
                ("H100", 989e12, 3.35e12), ("A100-SXM4-80GB", 312e12, 2.04e12), ("A100", 312e12, 1.56e12)]


def device_peaks(device: torch.device, args) -> tuple[float, float] | None:
    if args.peak_tflops and args.hbm_tbps:
        return args.peak_tflops * 1e12, args.hbm_tbps * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next(((flops, bandwidth) for key, flops, bandwidth in DEVICE_PEAKS if key in name), None)
    return None


def decoder_sizes(text) -> dict:
    """Parameter and cache sizes of a decoder-only text config (Qwen2/Qwen3/Llama layout)."""
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    q_dim, kv_dim = text.num_attention_heads * head_dim, text.num_key_value_heads * head_dim
    per_layer = text.hidden_size * (2 * q_dim + 2 * kv_dim) + 3 * text.hidden_size * text.intermediate_size
    return {"layer_params": per_layer * text.num_hidden_layers, "head_params": text.hidden_size * text.vocab_size,
            "q_dim": q_dim, "kv_dim": kv_dim, "layers": text.num_hidden_layers}


def encoder_flops(vision, tokens: int) -> float:
    """One image through a ViT-style encoder: 2 FLOPs per weight per token plus attention."""
    d, layers = vision.hidden_size, vision.num_hidden_layers
    return layers * (2 * tokens * (4 * d * d + 2 * d * vision.intermediate_size) + 4 * tokens * tokens * d)


def llava_floor(config, batch: int, prompt_tokens: int, frames: int, new_tokens: int, peaks: tuple[float, float],
                bytes_per_value: int = 2) -> tuple[float, float]:
    """Lower bounds (s) on prefill and decode for this work: each step takes at least its FLOPs at peak
    tensor throughput and at least its weight and KV-cache reads at peak HBM bandwidth."""
    flops_peak, bandwidth = peaks
    text, vision = decoder_sizes(config.text_config), config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    projector = 2 * patches * (vision.hidden_size * config.text_config.hidden_size + config.text_config.hidden_size ** 2)
    prefill_flops = batch * (frames * (encoder_flops(vision, patches) + projector)
                             + 2 * prompt_tokens * text["layer_params"] + 2 * text["layers"] * prompt_tokens ** 2 * text["q_dim"]
                             + 2 * text["head_params"])
    vision_params = vision.num_hidden_layers * (4 * vision.hidden_size ** 2 + 2 * vision.hidden_size * vision.intermediate_size)
    weights = (text["layer_params"] + text["head_params"] + vision_params) * bytes_per_value
    prefill = max(prefill_flops / flops_peak, weights / bandwidth)
    decode = 0.0
    for step in range(new_tokens):
        context = prompt_tokens + step
        step_flops = batch * (2 * (text["layer_params"] + text["head_params"]) + 4 * text["layers"] * context * text["q_dim"])
        step_bytes = (text["layer_params"] + text["head_params"]) * bytes_per_value \
            + batch * context * text["layers"] * 2 * text["kv_dim"] * bytes_per_value
        decode += max(step_flops / flops_peak, step_bytes / bandwidth)
    return prefill, decode


def bench_llava_video(args) -> None:
    """Generation speed of the llava_video head at a fixed output length, per batch size and attention kernel,
    against the floor from FLOPs and HBM bandwidth."""
    from extract import random_models
    from extract.heads import pick_attention, resolve_dtype

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peaks = device_peaks(device, args)
    attentions = args.attention.split(",") if args.attention else sorted({"sdpa", pick_attention("auto")})
    with tempfile.TemporaryDirectory() as tmp:
        for attention in attentions:
            head, what = _captioning_head(
                "llava_video", args, tmp, device,
                lambda: random_models.llava_video(device, resolve_dtype("auto", device), attention, args.layers),
                "LLaVA-Video-7B-Qwen2 architecture (Qwen2-7B + SigLIP-so400m-384), RANDOM weights", random_models.save_tiny_llava_video,
                "TINY random model (not the 7B: timings only show the pipeline works)",
                preset=args.preset, num_frames=args.frames, max_new_tokens=args.new_tokens, attn_implementation=attention)
            print(f"# extract.bench llava_video: {what} on {_device_name(device)}, {head.num_frames} frames ({args.preset} preset), "
                  f"{args.new_tokens} new tokens per clip, {head.model.dtype}, attention {head.model.config._attn_implementation}")
            _time_llava(head, device, args, peaks)
            del head
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)


def _time_llava(head, device: torch.device, args, peaks) -> None:
    """Both generation paths of the head side by side on the same clips: clips/hour through `head.infer` (prefill and
    decode of `new_tokens` tokens; random weights never end a caption), prefill s/clip, decode ms/step, peak memory."""
    from extract.heads import Clip

    media = moving_pattern(head.media_spec, seconds=4.0)
    floor_columns = f"  {'floor clips/h':>13}  {'of floor':>8}" if peaks else ""
    print(f"{'engine':<10}  {'clips':>5}  {'clips/hour':>10}  {'prefill s/clip':>14}  {'decode ms/step':>14}  {'peak memory':>11}{floor_columns}")
    clips_per_hour = {}
    for engine in ("generate", "continuous"):
        head.engine_name = engine
        batches = args.generate_batches if engine == "generate" and args.generate_batches else args.batches
        for batch in [int(b) for b in batches.split(",")]:
            head.engine, head.max_slots = None, batch  # the engine decodes every clip of the batch at once
            clips = [Clip(f"k{i}", "v", 0.0, 4.0, media) for i in range(batch)]
            for clip in clips:
                clip.prepared = head.prepare(clip)  # a worker's share
            prompt_tokens = len(clips[0].prepared["input_ids"])
            try:
                with torch.inference_mode():
                    head.max_new_tokens = 2
                    head.infer(clips)  # warm-up (and the engine's CUDA graph capture)
                    _reset_peak(device)
                    head.max_new_tokens = 1
                    prefill = _timed(head.infer, device, clips=clips)
                    head.max_new_tokens = args.new_tokens
                    total = _timed(head.infer, device, clips=clips)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                print(f"{engine:<10}  {batch:>5}  out of memory")
                continue
            # too few new tokens to see past the timing noise shows as nan
            step_ms = 1000 * (total - prefill) / (args.new_tokens - 1) if args.new_tokens > 1 and total > prefill else float("nan")
            clips_per_hour[engine, batch] = 3600 * batch / total
            row = (f"{engine:<10}  {batch:>5}  {clips_per_hour[engine, batch]:>10.0f}  {prefill / batch:>14.3f}  {step_ms:>14.1f}  "
                   f"{_peak_memory(device) / 2**30:>9.2f} GiB")
            if peaks:
                floor = sum(llava_floor(head.model.config, batch, prompt_tokens, head.num_frames, args.new_tokens, peaks))
                row += f"  {3600 * batch / floor:>13.0f}  {floor / total:>8.2f}"
            print(row)
    best = {engine: max((v for (e, _), v in clips_per_hour.items() if e == engine), default=None) for engine in ("generate", "continuous")}
    if all(best.values()):
        print(f"best clips/hour: engine {best['continuous']:.0f} against generate {best['generate']:.0f} "
              f"({best['continuous'] / best['generate']:.2f} times)")


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _timed(function, device: torch.device, **kwargs) -> float:
    _sync(device)
    started = time.perf_counter()
    function(**kwargs)
    _sync(device)
    return time.perf_counter() - started


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"


# ---------------------------------------------------------------------------- generation: engine vs generate


def long_tailed_lengths(count: int, cap: int, median: float = 150, share_at_cap: float = 0.10, seed: int = 0) -> list[int]:
    """Caption lengths drawn log-normally with this median and this share of them at the cap (cut to it): long-tailed,
    as real captions are under the authors' 1,024-token limit."""
    import math
    import random
    from statistics import NormalDist

    sigma = math.log(cap / median) / NormalDist().inv_cdf(1 - share_at_cap)
    rng = random.Random(seed)
    return [max(1, min(cap, round(rng.lognormvariate(math.log(median), sigma)))) for _ in range(count)]


class _RowLengths:
    """transformers' stopping criterion that ends row r after lengths[r] new tokens, as an end token would."""

    def __init__(self, lengths: list[int]):
        self.lengths = torch.tensor(lengths)

    def __call__(self, input_ids, scores, **kwargs):  # given embeddings alone, input_ids holds the new tokens only
        return (input_ids.shape[1] >= self.lengths).to(input_ids.device)


def _generate_static(model, prompts: list[torch.Tensor], lengths: list[int], batch: int, static_cache: bool):
    """transformers' generate over static batches of `batch` requests (left-padded), each batch running until its
    longest caption ends: (tokens of each request, decode steps)."""
    from transformers import StoppingCriteriaList

    tokens, steps = [], 0
    for first in range(0, len(prompts), batch):
        rows, row_lengths = prompts[first : first + batch], lengths[first : first + batch]
        longest = max(len(p) for p in rows)
        embeds = torch.zeros(len(rows), longest, rows[0].shape[1], dtype=rows[0].dtype, device=rows[0].device)
        mask = torch.zeros(len(rows), longest, dtype=torch.long, device=rows[0].device)
        for r, prompt in enumerate(rows):
            embeds[r, longest - len(prompt):], mask[r, longest - len(prompt):] = prompt, 1
        cache = {"cache_implementation": "static", "disable_compile": True} if static_cache else {}
        out = model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max(row_lengths), do_sample=False,
                             stopping_criteria=StoppingCriteriaList([_RowLengths(row_lengths)]), pad_token_id=0, **cache)
        steps += out.shape[1] - 1  # the first token comes from the prefill
        tokens += [row[:n] for row, n in zip(out.tolist(), row_lengths)]
    return tokens, steps


def bench_generation(args) -> None:
    """The generation engine against transformers' generate on the same requests with long-tailed caption lengths
    (each request ends after its drawn length, as an end token would end it): decode steps per request and wall time."""
    from extract.generation import GenerationEngine, Request

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lengths = long_tailed_lengths(args.requests, args.cap, args.median, args.share_at_cap)
    model, prompts, what = _generation_model(args, device)
    engine = GenerationEngine(model.model.language_model if hasattr(model.model, "language_model") else model.model,
                              model.lm_head, [], max_slots=args.slots)
    ordered = sorted(lengths)
    print(f"# extract.bench generation: {what} on {_device_name(device)}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print(f"# {args.requests} requests of {min(len(p) for p in prompts)}-{max(len(p) for p in prompts)} prompt tokens; caption lengths "
          f"log-normal, median {args.median:g}, {args.share_at_cap:.0%} at the {args.cap}-token cap (drawn: median "
          f"{ordered[len(ordered) // 2]}, mean {sum(lengths) / len(lengths):.0f}, {sum(n == args.cap for n in lengths)} at the cap); "
          f"{args.slots} requests at once both ways")
    with torch.inference_mode():
        engine.generate([Request(prompts[0], len(prompts[0]), 2)])  # warm-up (and CUDA graph capture)
        engine.stats.decode_steps = 0
        _sync(device)
        started = time.perf_counter()
        generations = engine.generate([Request(p, len(p), n) for p, n in zip(prompts, lengths)])
        _sync(device)
        engine_s = time.perf_counter() - started
        engine_steps = engine.stats.decode_steps
        del engine
        _sync(device)
        started = time.perf_counter()
        reference, static_steps = _generate_static(model, prompts, lengths, args.slots, static_cache=device.type == "cuda")
        _sync(device)
        static_s = time.perf_counter() - started
    same = sum(g.tokens == r for g, r in zip(generations, reference))
    print(f"{'path':<34}  {'decode steps':>12}  {'steps/request':>13}  {'wall s':>8}  {'requests/hour':>13}")
    for name, steps, seconds in ((f"generate, static batches of {args.slots}", static_steps, static_s),
                                 (f"engine, {args.slots} slots", engine_steps, engine_s)):
        print(f"{name:<34}  {steps:>12}  {steps / args.requests:>13.1f}  {seconds:>8.2f}  {3600 * args.requests / seconds:>13.0f}")
    print(f"engine/generate: decode steps {engine_steps / static_steps:.2f}, wall time {engine_s / static_s:.2f}; "
          f"same tokens on {same} of {args.requests} requests")


def _generation_model(args, device: torch.device):
    """(causal LM with .model and .lm_head, prompt embeddings, what it is): a small random Qwen2 (any machine), or
    LLaVA-Video-7B's architecture with random weights and the head's own 64-frame prompt embeddings."""
    if args.size == "full":
        from extract import random_models
        from extract.heads import Clip, build, resolve_dtype

        head = build("llava_video", {"checkpoint": "random weights"})
        head.attach(*random_models.llava_video(device, resolve_dtype("auto", device), "sdpa", args.layers), device)
        prepared = head.prepare(Clip("k", "v", 0.0, 4.0, moving_pattern(head.media_spec, seconds=4.0)))
        with torch.inference_mode():
            prompt = head.prompt_embeddings(prepared)
        return head.model, [prompt] * args.requests, "LLaVA-Video-7B architecture, RANDOM weights, its 64-frame prompt" + _cut(args.layers)
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=1024, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=4096, eos_token_id=None, pad_token_id=0)
    model = Qwen2ForCausalLM(config).to(device).eval()
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randn(int(length), config.hidden_size, generator=generator).to(device)
               for length in torch.randint(64, 257, (args.requests,), generator=generator)]
    return model, prompts, "a small random Qwen2 (2 layers, hidden 128)"


def bench_internvl(args) -> None:
    """Keyframes/s of the internvl head per batch of clips: a full-size random model, or the given checkpoint."""
    from extract import random_models
    from extract.heads import pick_attention, resolve_dtype

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        head, what = _captioning_head(
            "internvl", args, tmp, device,
            lambda: random_models.internvl(device, resolve_dtype("auto", device), pick_attention("auto"), args.layers),
            "InternVL3.5-8B architecture (InternViT-300M + Qwen3-8B), RANDOM weights", None, None, preset=args.preset,
            max_new_tokens=args.new_tokens)
        print(f"# extract.bench internvl: {what} on {_device_name(device)}, {head.media_spec.num_frames} keyframes per clip of "
              f"640x360 ({args.preset} preset: up to {head.max_tiles} tiles each), {args.new_tokens} new tokens each, "
              f"{head.model.dtype}, attention {head.model.config._attn_implementation}")
        rates = {}
        for engine in ("generate", "continuous"):
            # the engine takes every keyframe of the largest batch at once
            head.engine_name, head.engine = engine, None
            head.max_slots = max(int(b) for b in args.batches.split(",")) * head.media_spec.num_frames
            print(f"engine={engine}")
            rates[engine] = _time_keyframes(head, device, args.batches)
        print("keyframes/s, engine against generate: " + ", ".join(
            f"{batch} clips {rates['continuous'][batch] / rates['generate'][batch]:.2f} times"
            for batch in rates["generate"] if batch in rates["continuous"]))


def bench_grounding_sam(args) -> None:
    """Keyframes/s of the grounding_sam head per batch of clips: full-size random models, or the given checkpoints."""
    from extract import random_models
    from extract.heads import build, resolve_dtype

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    options = {"preset": args.preset, "box_threshold": 0.0, "text_threshold": 0.0, "max_detections": args.detections}
    if args.detector and args.segmenter:
        head = build("grounding_sam", {"detector": args.detector, "segmenter": args.segmenter, **options})
        head.open(device)
        head.load(device)
        what = head.model_id
    else:
        head = build("grounding_sam", options)  # the preset's models, built here with random weights
        sam = head.segmenter_id.rsplit("-", 1)[-1]  # facebook/sam-vit-huge | -base
        head.attach(*random_models.grounding_sam(device, resolve_dtype(head.dtype_name, device), args.layers, sam), device)
        what = f"grounding-dino-tiny + sam-vit-{sam} architectures ({args.preset} preset), RANDOM weights" + _cut(args.layers)
    print(f"# extract.bench grounding_sam: {what} on {_device_name(device)}, {head.media_spec.num_frames} keyframes of 640x360 "
          f"per clip, {args.detections} boxes each, {head.dtype}")
    _time_keyframes(head, device, args.batches)


def _captioning_head(name: str, args, folder: str, device: torch.device, full_model, full_description: str, save_tiny,
                     tiny_description: str | None, **options):
    """(head, what it runs): the given checkpoint, a full-size random model attached, or a tiny one saved in `folder`."""
    from extract.heads import build

    size = "checkpoint" if args.checkpoint else getattr(args, "size", "full")
    head = build(name, {"checkpoint": args.checkpoint or (folder if size == "tiny" else "random weights"), **options})
    if size == "full":
        head.attach(*full_model(), device)
        return head, full_description + _cut(args.layers)
    if size == "tiny":
        save_tiny(folder)
    head.open(device)
    head.load(device)
    return head, args.checkpoint or tiny_description


def _cut(layers: int | None) -> str:
    return f", CUT to {layers} layers (a check of the path, not a benchmark)" if layers else ""


def bench_audio_caption(args) -> None:
    """Clips/s of the audio_caption head per batch of windows, at the released size with random weights."""
    from extract.heads import Clip, build
    from extract.random_models import save_random_audio_captioner

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(save_random_audio_captioner(tmp))
        batches = [int(b) for b in args.batches.split(",")]
        head = build("audio_caption", {"checkpoint": folder, "tokenizer": folder, "window_batch": max(batches), "dtype": args.dtype})
        head.open(device)
        head.load(device)
        # random weights rarely say </s>: every caption gets the same length
        head.beam_search.update(min_length=args.caption_tokens + 2, max_length=args.caption_tokens + 2)
        parameters = sum(p.numel() for p in head.model.parameters()) / 1e6
        print(f"# extract.bench audio_caption: released architecture, RANDOM weights "
              f"({parameters:.1f} M parameters) on {device.type}, {head.model.bart.dtype}, {args.seconds:g} s clips (one window each), "
              f"beam {head.beam_search['num_beams']}, {args.caption_tokens}-token captions")
        media = moving_pattern(head.media_spec, seconds=args.seconds)
        print(f"{'clips':>5}  {'clips/s':>8}  {'audio s/s':>9}  {'peak memory':>11}")
        for batch in batches:
            elapsed, _ = _time_infer(head, [Clip(f"k{i}", "v", 0.0, args.seconds, media) for i in range(batch)], device)
            print(f"{batch:>5}  {batch / elapsed:>8.2f}  {batch * args.seconds / elapsed:>9.1f}  {_peak_memory(device) / 2**30:>9.2f} GiB")


def bench_synchformer(args) -> None:
    """Clips/s of av_sync's synchformer method per batch, at the released size with random weights."""
    from extract.heads import Clip, build
    from extract.synchformer import Synchformer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synchformer_state_dict.pth"
        torch.save(Synchformer().state_dict(), path)
        batches = [int(b) for b in args.batches.split(",")]
        head = build("av_sync", {"method": "synchformer", "checkpoint": str(path), "dtype": args.dtype, "window_batch": args.window_batch})
        head.load(device)
    model = head.model
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    media = moving_pattern(head.media_spec, seconds=args.seconds)
    windows = len(head.prepare(Clip("k", "v", 0.0, args.seconds, media))["starts"])
    print(f"# extract.bench synchformer: released architecture, RANDOM weights ({parameters:.1f} M parameters) on "
          f"{_device_name(device)}, {next(model.parameters()).dtype}, torch {torch.__version__}; {args.seconds:g} s clips "
          f"({windows} window(s) of 14 x 16 frames at 224 px), {args.window_batch} windows per model call")
    print(f"{'clips':>5}  {'clips/s':>8}  {'windows/s':>9}  {'peak memory':>11}  {'prepare ms/clip':>15}")
    for batch in batches:
        elapsed, prepare = _time_infer(head, [Clip(f"k{i}", "v", 0.0, args.seconds, media) for i in range(batch)], device)
        print(f"{batch:>5}  {batch / elapsed:>8.3f}  {batch * windows / elapsed:>9.3f}  {_peak_memory(device) / 2**30:>9.2f} GiB  "
              f"{1000 * prepare / batch:>15.0f}")


def moving_pattern(spec: MediaSpec, seconds: float, height: int = 360, width: int = 640, fps: float = 30.0) -> Media:
    """What the decoder would hand a head for a `seconds`-long 640x360 clip at 30 fps with a 440 Hz tone, made
    in memory: the model benchmarks time the model step, whose cost does not depend on the pictures,
    and they need no ffmpeg on the GPU machine."""
    if spec.size:
        height, width = spec.size
    elif spec.crop:
        height = width = spec.crop
    elif spec.short_side and min(height, width) > spec.short_side:
        scale = spec.short_side / min(height, width)
        height, width = round(height * scale / 2) * 2, round(width * scale / 2) * 2
    total = int(fps * seconds)
    if not spec.wants_video:
        indices = []
    elif spec.every_frame:
        indices = list(range(min(spec.max_frames, total)))
    elif spec.sampling != "centres" and spec.num_frames:
        indices = sample_indices(spec.sampling, total, spec.num_frames)
    else:
        count = spec.num_frames or min(spec.max_frames, max(1, int(seconds * spec.fps)))
        indices = [int((i + 0.5) * total / count) for i in range(count)]
    rows, columns = np.mgrid[0:height, 0:width]
    frames = np.stack([np.stack([(columns + 8 * i) % 256, (rows + 4 * i) % 256, (rows + columns) % 256], axis=-1)
                       for i in indices]).astype(np.uint8) if indices else None
    audio = None
    if spec.audio:
        audio = (0.5 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * spec.sample_rate)) / spec.sample_rate)).astype(np.float32)
    info = {"container": "mp4 (isom)", "duration_s": seconds, "video_stream_index": 0, "audio_stream_index": 1,
            "video_streams": [{"index": 0, "codec": "h264", "width": width, "height": height, "fps": fps, "fps_header": fps,
                               "num_frames": total, "duration_s": seconds}],
            "audio_streams": [{"index": 1, "codec": "aac", "sample_rate": 44100, "channels": 1}]}
    return Media(info=info, frames=frames, frame_times=[round(i / fps, 4) for i in indices], frame_indices=indices, audio=audio,
                 sample_rate=spec.sample_rate if spec.audio else 0)


def _time_keyframes(head, device: torch.device, batches: str) -> dict[int, float]:
    """Print keyframes/s and peak memory of the head's model step on batches of the same clip, and the CPU time
    of its `prepare` per clip (a worker's share, off the model's path); return keyframes/s per batch."""
    from extract.heads import Clip

    media = moving_pattern(head.media_spec, seconds=4.0)
    print(f"{'clips':>5}  {'keyframes/s':>11}  {'peak memory':>11}  {'prepare ms/clip':>15}")
    rates = {}
    for batch in [int(b) for b in batches.split(",")]:
        clips = [Clip(f"k{i}", "v", 0.0, 4.0, media) for i in range(batch)]
        try:
            elapsed, prepare = _time_infer(head, clips, device)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            print(f"{batch:>5}  out of memory")
            continue
        rates[batch] = batch * head.media_spec.num_frames / elapsed
        print(f"{batch:>5}  {rates[batch]:>11.1f}  {_peak_memory(device) / 2**30:>9.2f} GiB  {1000 * prepare / batch:>15.0f}")
    return rates


def _time_infer(head, clips: list, device: torch.device) -> tuple[float, float]:
    """(seconds for one `head.infer(clips)` after a warm-up call, seconds of `head.prepare` for the clips): the model
    step gets its clips prepared, as the workers prepare them."""
    started = time.perf_counter()
    for clip in clips:
        clip.prepared = head.prepare(clip)
    prepare = time.perf_counter() - started
    with torch.inference_mode():
        head.infer(clips)
        _sync(device)
        started = time.perf_counter()
        head.infer(clips)
        _sync(device)
        return time.perf_counter() - started, prepare


def _peak_memory(device: torch.device) -> int:
    import resource

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")  # the runs' progress bars would interleave with the tables
    parser = argparse.ArgumentParser(prog="python -m extract.bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    data = sub.add_parser("data", help="streaming decode vs in-memory floor vs extract-to-disk")
    data.add_argument("--clips", type=int, default=48)
    data.add_argument("--shards", type=int, default=4)
    data.add_argument("--seconds", type=float, default=4.0)
    data.add_argument("--workers", default="0,1,2")
    sub.add_parser("av_sync", help="av_sync accuracy over generated flash/click clips, and clips/s")
    select = sub.add_parser("select", help="extract.select's clips/s and peak memory, against reading the input shards")
    select.add_argument("--clips", default="20000,200000")
    select.add_argument("--per-shard", type=int, default=2000)
    select.add_argument("--media-kb", type=int, default=4)
    export = sub.add_parser("export", help="export's peak memory against the size of the run")
    export.add_argument("--clips", default="20000,200000")
    export.add_argument("--per-shard", type=int, default=2000)
    pipeline = sub.add_parser("pipeline", help="one pass for several heads vs single runs; main-process time per clip")
    pipeline.add_argument("--clips", type=int, default=24)
    pipeline.add_argument("--shards", type=int, default=2)
    pipeline.add_argument("--seconds", type=float, default=4.0)
    pipeline.add_argument("--workers", type=int, default=2)
    pipeline.add_argument("--batch-size", type=int, default=4)
    pipeline.add_argument("--frames", type=int, default=64)
    pipeline.add_argument("--model-wait-ms", type=float, default=100.0)
    pipeline.add_argument("--input", help="time these shards (a folder) instead of generated ones: machines without ffmpeg's command")

    generation = sub.add_parser("generation", help="the generation engine against transformers' generate, long-tailed captions")
    generation.add_argument("--size", choices=("tiny", "full"), default="tiny", help="full: LLaVA-Video-7B's architecture (a GPU)")
    generation.add_argument("--layers", type=int, help="with --size full: cut the depth, for a quick check on a small machine")
    generation.add_argument("--requests", type=int, default=32)
    generation.add_argument("--slots", type=int, default=8, help="requests at once: the engine's slots, generate's batch")
    generation.add_argument("--cap", type=int, default=1024, help="max_new_tokens (the authors' 1,024)")
    generation.add_argument("--median", type=float, default=150)
    generation.add_argument("--share-at-cap", type=float, default=0.10)
    run_bench = sub.add_parser("run", help="[probe,llava_video] through run(cfg) with the full-size random model attached")
    run_bench.add_argument("--input", help="a folder of shards (machines without ffmpeg's command); default: generated")
    run_bench.add_argument("--clips", type=int, default=32)
    run_bench.add_argument("--shards", type=int, default=2)
    run_bench.add_argument("--seconds", type=float, default=4.0)
    run_bench.add_argument("--workers", type=int, default=8)
    run_bench.add_argument("--batch-size", type=int, help="llava_video's batch (default: 64 on a GPU)")
    run_bench.add_argument("--new-tokens", type=int, default=256)
    run_bench.add_argument("--layers", type=int, help="cut the depth, for a quick check on a small machine")
    llava = sub.add_parser("llava_video", help="llava_video generation speed and its floor per batch size and attention kernel")
    llava.add_argument("--checkpoint", help="a transformers-format checkpoint")
    llava.add_argument("--frames", type=int, help="frames per clip (default: the preset's)")
    llava.add_argument("--new-tokens", type=int, default=32)
    llava.add_argument("--generate-batches", help="batch sizes for transformers' generate (default: --batches)")
    llava.add_argument("--attention", help="comma-separated attn_implementation values; default sdpa and flash-attn when installed")
    llava.add_argument("--peak-tflops", type=float, help="the device's dense bf16 TFLOP/s for the floor (known for H100/H200/A100)")
    llava.add_argument("--hbm-tbps", type=float, help="the device's memory bandwidth in TB/s for the floor")
    grounding = sub.add_parser("grounding_sam", help="grounding_sam keyframes/s per batch")
    grounding.add_argument("--detector")
    grounding.add_argument("--segmenter")
    grounding.add_argument("--detections", type=int, default=8)
    grounding.add_argument("--preset", choices=("authors", "fast"), default="authors")
    internvl = sub.add_parser("internvl", help="internvl keyframes/s per batch")
    internvl.add_argument("--checkpoint")
    internvl.add_argument("--new-tokens", type=int, default=32)
    for model_bench in (llava, internvl):
        model_bench.add_argument("--preset", choices=("authors", "fast"), default="authors")
    for model_bench in (llava, grounding, internvl):
        model_bench.add_argument("--batches", default="1,2,4")
        model_bench.add_argument("--size", choices=("tiny", "full"), default="tiny",
                                 help="tiny: a tiny random checkpoint (or the given one); full: the real architecture with "
                                      "random weights built on the device")
        model_bench.add_argument("--layers", type=int, help="with --size full: cut the depth, for a quick check on a small machine")

    audio = sub.add_parser("audio_caption", help="audio_caption clips/s per batch (released size, random weights)")
    audio.add_argument("--size", choices=("full", "tiny"), default="full")
    audio.add_argument("--seconds", type=float, default=10.0)
    audio.add_argument("--caption-tokens", type=int, default=20)
    audio.add_argument("--batches", default="1,4,16")
    audio.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    sync = sub.add_parser("synchformer", help="av_sync's synchformer method: clips/s per batch (released size, random weights)")
    sync.add_argument("--seconds", type=float, default=4.8, help="clip length: 4.8 s is one window, 8 s two")
    sync.add_argument("--batches", default="1,2")
    sync.add_argument("--window-batch", type=int, default=8)
    sync.add_argument("--dtype", default="float32", choices=("auto", "float32", "bfloat16", "float16"))
    args = parser.parse_args()
    {"select": bench_select, "run": bench_run, "generation": bench_generation, "synchformer": bench_synchformer, "data": bench_data, "av_sync": bench_av_sync, "pipeline": bench_pipeline, "export": bench_export, "llava_video": bench_llava_video, "grounding_sam": bench_grounding_sam,
     "internvl": bench_internvl, "audio_caption": bench_audio_caption}[args.what](args)


if __name__ == "__main__":
    main()
