"""`python -m extract.bench pipeline`: one pass for several heads against the single-head runs it replaces, and the
main process's own time per clip with llava_video's processor in the workers or in the main loop (a stand-in model
waits for the GPU's share: simulated)."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from extract.bench.common import make_shards, run_heads
from extract.data import resolve_shards


class StandInModel:
    """Stands in for a captioning model on the device: each call waits a fixed time per clip (the GPU's
    share, spent asleep so the process uses no CPU meanwhile), then says `new_tokens` tokens."""

    def __init__(self, wait_per_clip_s: float, new_tokens: int, token_id: int, eos_id: int, vocab_rows: int):
        from types import SimpleNamespace

        self.wait_per_clip_s, self.new_tokens, self.token_id, self.vocab_rows = wait_per_clip_s, new_tokens, token_id, vocab_rows
        self.dtype = torch.float32
        self.config = SimpleNamespace(_commit_hash=None)
        self.generation_config = SimpleNamespace(eos_token_id=eos_id)
        self.waited_s = 0.0

    def get_input_embeddings(self):
        return lambda ids: torch.zeros((*ids.shape, 8), device=ids.device)

    def get_output_embeddings(self):  # the head's vocabulary rows, all of them: nothing to suppress
        from types import SimpleNamespace

        return SimpleNamespace(weight=torch.empty(self.vocab_rows, 0))

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
    from extract.heads import register
    from extract.heads.llava_video import LlavaVideo
    from extract.models import random_models

    class StandInLlava(LlavaVideo):
        name = "llava_video_stand_in"

        def open(self, device):
            tokenizer = random_models.tiny_tokenizer()
            self._use(tokenizer, random_models.llava_video_config(tokenizer), torch.float32, device)

        def load(self, device):
            self.model = StandInModel(wait_per_clip_s, 8, self.video_token, self.tokenizer.eos_token_id, self.vocab_rows)

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
    from extract.models.random_models import save_tiny_llava_video

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
            options = {name: {"llava_video": llava, "av_sync": {"method": "onset_xcorr"}}.get(name, {}) for name in names}
            singles = sum(run_heads({name: options[name]}, urls, scratch / f"single-{name}-{len(names)}", args.workers,
                                     args.batch_size)[0] for name in names)
            together, _ = run_heads(options, urls, scratch / f"pass-{len(names)}", args.workers, args.batch_size)
            print(f"{'[' + ','.join(names) + ']':<34}  {singles:>9.1f} s  {together:>7.1f} s  {together / singles:>10.2f}")

        wait_s = args.model_wait_ms / 1000
        in_workers, in_main = _stand_in_llava_heads(wait_s)
        print(f"# llava_video with its full-size preprocessing ({args.frames} frames at 384x384) and a stand-in model that waits "
              f"{args.model_wait_ms:g} ms a clip: the main process's own time per clip, outside the model call and the wait for data")
        print(f"{'processor runs in':<18}  {'main own ms/clip':>16}  {'main CPU ms/clip':>16}  {'waiting for data':>16}  {'clips/s':>7}")
        for where, head in (("the main loop", in_main), ("the workers", in_workers)):
            _, summary = run_heads({head.name: {"checkpoint": "stand-in", "num_frames": args.frames, "engine": "generate"}}, urls,
                                    scratch / f"stand-in-{head.name}", args.workers, args.batch_size)
            [rank] = summary["ranks"]
            timing, clips = rank["timing"], rank["clips_read"]
            waited = wait_s * clips
            own = (timing["loop_s"] - timing["waiting_for_data_s"] - waited) / clips
            print(f"{where:<18}  {1000 * own:>16.1f}  {1000 * timing['loop_cpu_s'] / clips:>15.1f}  "
                  f"{timing['waiting_for_data_s']:>14.1f} s  {clips / timing['loop_s']:>7.2f}")


def add_arguments(parser) -> None:
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--model-wait-ms", type=float, default=100.0)
    parser.add_argument("--input", help="time these shards (a folder) instead of generated ones: machines without ffmpeg's command")
