"""Side-by-side measurements, printed as ratios from one run on the same inputs.

    python -m extract.bench data [--clips 48] [--shards 4] [--workers 0,1,2]
    python -m extract.bench av_sync
    python -m extract.bench llava_video [--checkpoint DIR] [--frames 64] [--new-tokens 32] [--batches 1,2,4]
    python -m extract.bench grounding_sam [--detector DIR --segmenter DIR] [--batches 1,2,4]
    python -m extract.bench internvl [--checkpoint DIR] [--new-tokens 32] [--batches 1,2,4]
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

import torch

from extract.data import as_list, make_loader
from extract.decode import MediaSpec, decode_media
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


def _count(loader) -> int:
    return sum(1 for batch in loader for item in batch if item.__class__.__name__ == "Media" or item.get("kind") == "clip")


def time_streaming(urls, workers: int, limits: Limits = LIMITS) -> tuple[int, float]:
    started = time.perf_counter()
    count = _count(make_loader(urls, {}, SPEC, limits, batch_size=4, num_workers=workers))
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


def bench_llava_video(args) -> None:
    """Generation speed of the llava_video head at a fixed output length, per batch size."""
    from extract.heads import Clip, build
    from extract.synthetic import lavfi_clip
    from extract.tiny import save_tiny_llava_video

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or str(save_tiny_llava_video(tmp))
        head = build("llava_video", {"checkpoint": checkpoint, "num_frames": args.frames, "max_new_tokens": args.new_tokens})
        head.load(device)
        print(f"# extract.bench llava_video: {'TINY random model (not the 7B: timings only show the pipeline works)' if not args.checkpoint else checkpoint} "
              f"on {device.type}, {args.frames} frames, {args.new_tokens} new tokens per clip, {head.model.dtype}, "
              f"attention {head.model.config._attn_implementation}")
        media = decode_media(lavfi_clip(4, "testsrc2", size="640x360", rate=30), head.media_spec)
        print(f"{'batch':>5}  {'clips/hour':>10}  {'prefill tok/s':>13}  {'decode tok/s':>12}  {'peak memory':>11}")
        for batch in [int(b) for b in args.batches.split(",")]:
            clips = [Clip(f"k{i}", "v", 0.0, 4.0, media) for i in range(batch)]
            inputs = head.processor(text=[head.prompt_for(c) for c in clips], videos=[torch.from_numpy(media.frames)] * batch,
                                    return_tensors="pt", padding=True, do_sample_frames=False).to(device)
            inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(head.model.dtype)
            prompt_tokens = inputs["input_ids"].numel()
            with torch.inference_mode():
                head.model(**inputs)  # warm-up
                _sync(device)
                started = time.perf_counter()
                head.model(**inputs)
                _sync(device)
                prefill = time.perf_counter() - started
                started = time.perf_counter()
                head.model.generate(**inputs, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
                _sync(device)
                total = time.perf_counter() - started
            print(f"{batch:>5}  {3600 * batch / total:>10.0f}  {prompt_tokens / prefill:>13.0f}  "
                  f"{batch * args.new_tokens / max(total - prefill, 1e-9):>12.1f}  {_peak_memory(device) / 2**30:>9.2f} GiB")


def bench_internvl(args) -> None:
    """Keyframes/s of the internvl head per batch of clips (a tiny model unless given a checkpoint)."""
    from extract.heads import build
    from extract.tiny import save_tiny_internvl

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or str(save_tiny_internvl(tmp))
        head = build("internvl", {"checkpoint": checkpoint, "max_new_tokens": args.new_tokens})
        head.load(device)
        print(f"# extract.bench internvl: {'TINY random model (timings only show the path works)' if not args.checkpoint else checkpoint} "
              f"on {device.type}, {head.media_spec.num_frames} keyframes per clip, up to {args.new_tokens} new tokens each, {head.model.dtype}")
        _time_keyframes(head, device, args.batches)


def bench_grounding_sam(args) -> None:
    """Keyframes/s of the grounding_sam head per batch of clips (tiny models unless given checkpoints)."""
    from extract.heads import build
    from extract.tiny import save_tiny_grounding_dino, save_tiny_sam

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        detector = args.detector or str(save_tiny_grounding_dino(Path(tmp) / "gd"))
        segmenter = args.segmenter or str(save_tiny_sam(Path(tmp) / "sam"))
        head = build("grounding_sam", {"detector": detector, "segmenter": segmenter, "box_threshold": 0.0,
                                       "text_threshold": 0.0, "max_detections": args.detections})
        head.load(device)
        tiny = not (args.detector and args.segmenter)
        print(f"# extract.bench grounding_sam: {'TINY random models (timings only show the path works)' if tiny else head.model_id} "
              f"on {device.type}, {head.media_spec.num_frames} keyframes of 640x360 per clip, {args.detections} boxes each, {head.dtype}")
        _time_keyframes(head, device, args.batches)


def bench_audio_caption(args) -> None:
    """Clips/s of the audio_caption head per batch of windows, at the released size with random weights."""
    from extract.heads import Clip, build
    from extract.tiny import save_random_audio_captioner, save_tiny_audio_captioner

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        folder = str((save_random_audio_captioner if args.size == "full" else save_tiny_audio_captioner)(tmp))
        batches = [int(b) for b in args.batches.split(",")]
        head = build("audio_caption", {"checkpoint": folder, "tokenizer": folder, "window_batch": max(batches)})
        head.load(device)
        # random weights rarely say </s>: every caption gets the same length
        head.beam_search.update(min_length=args.caption_tokens + 2, max_length=args.caption_tokens + 2)
        parameters = sum(p.numel() for p in head.model.parameters()) / 1e6
        print(f"# extract.bench audio_caption: {'released architecture, RANDOM weights' if args.size == 'full' else 'TINY random model'} "
              f"({parameters:.1f} M parameters) on {device.type}, {head.model.bart.dtype}, {args.seconds:g} s clips (one window each), "
              f"beam {head.beam_search['num_beams']}, {args.caption_tokens}-token captions")
        media = decode_media(lavfi_clip(args.seconds, "testsrc", size="64x64", rate=1, tone=440), head.media_spec)
        print(f"{'clips':>5}  {'clips/s':>8}  {'audio s/s':>9}  {'peak memory':>11}")
        for batch in batches:
            elapsed = _time_infer(head, [Clip(f"k{i}", "v", 0.0, args.seconds, media) for i in range(batch)], device)
            print(f"{batch:>5}  {batch / elapsed:>8.2f}  {batch * args.seconds / elapsed:>9.1f}  {_peak_memory(device) / 2**30:>9.2f} GiB")


def _time_keyframes(head, device: torch.device, batches: str) -> None:
    """Print keyframes/s and peak memory of `head.infer` on batches of the same decoded clip."""
    from extract.heads import Clip
    from extract.synthetic import lavfi_clip

    media = decode_media(lavfi_clip(4, "testsrc2", size="640x360", rate=30), head.media_spec)
    print(f"{'clips':>5}  {'keyframes/s':>11}  {'peak memory':>11}")
    for batch in [int(b) for b in batches.split(",")]:
        elapsed = _time_infer(head, [Clip(f"k{i}", "v", 0.0, 4.0, media) for i in range(batch)], device)
        print(f"{batch:>5}  {batch * head.media_spec.num_frames / elapsed:>11.1f}  {_peak_memory(device) / 2**30:>9.2f} GiB")


def _time_infer(head, clips: list, device: torch.device) -> float:
    """Seconds for one `head.infer(clips)` after a warm-up call."""
    with torch.inference_mode():
        head.infer(clips)
        _sync(device)
        started = time.perf_counter()
        head.infer(clips)
        _sync(device)
        return time.perf_counter() - started


def _peak_memory(device: torch.device) -> int:
    import resource

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m extract.bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    data = sub.add_parser("data", help="streaming decode vs in-memory floor vs extract-to-disk")
    data.add_argument("--clips", type=int, default=48)
    data.add_argument("--shards", type=int, default=4)
    data.add_argument("--seconds", type=float, default=4.0)
    data.add_argument("--workers", default="0,1,2")
    sub.add_parser("av_sync", help="av_sync accuracy over generated flash/click clips, and clips/s")
    llava = sub.add_parser("llava_video", help="llava_video generation speed per batch size (tiny model unless --checkpoint)")
    llava.add_argument("--checkpoint", help="a transformers-format checkpoint; default: a tiny random one")
    llava.add_argument("--frames", type=int, default=64)
    llava.add_argument("--new-tokens", type=int, default=32)
    llava.add_argument("--batches", default="1,2,4")
    grounding = sub.add_parser("grounding_sam", help="grounding_sam keyframes/s per batch (tiny models unless given)")
    grounding.add_argument("--detector")
    grounding.add_argument("--segmenter")
    grounding.add_argument("--detections", type=int, default=8)
    grounding.add_argument("--batches", default="1,2,4")
    internvl = sub.add_parser("internvl", help="internvl keyframes/s per batch (a tiny model unless --checkpoint)")
    internvl.add_argument("--checkpoint")
    internvl.add_argument("--new-tokens", type=int, default=32)
    internvl.add_argument("--batches", default="1,2,4")
    audio = sub.add_parser("audio_caption", help="audio_caption clips/s per batch (released size, random weights)")
    audio.add_argument("--size", choices=("full", "tiny"), default="full")
    audio.add_argument("--seconds", type=float, default=10.0)
    audio.add_argument("--caption-tokens", type=int, default=20)
    audio.add_argument("--batches", default="1,4,16")
    args = parser.parse_args()
    {"data": bench_data, "av_sync": bench_av_sync, "llava_video": bench_llava_video, "grounding_sam": bench_grounding_sam,
     "internvl": bench_internvl, "audio_caption": bench_audio_caption}[args.what](args)


if __name__ == "__main__":
    main()
