"""llava_video: LLaVA-Video-7B-Qwen2 captions with a confidence, batched, bf16 on CUDA.

The prompt is the one LLaVA-Video is evaluated with: the video's length and the times of the
sampled frames, then the question, in Qwen's chat format, decoded greedily. The decoder hands
over the frames at the processor's size; the processor (normalising, the prompt's tokens) runs
in the workers, and the main process only pads the batch and runs the model.
"""

from __future__ import annotations

import hashlib
import math

import torch

from extract.decode import MediaSpec
from extract.generation import greedy_generate, left_pad
from extract.heads import Clip, Head, Result, load_model, load_processor, pick_attention, register, resolve_dtype, split_on_oom

TIME_INSTRUCTION = ("The video lasts for {duration:.2f} seconds, and {count} frames are uniformly sampled from it. "
                    "These frames are located at {times}.Please answer the following questions related to this video.")


@register
class LlavaVideo(Head):
    name = "llava_video"
    requires = ("transformers",)
    fields = {"caption": str, "confidence": float, "mean_logprob": float, "num_tokens": int, "finish_reason": str,
              "num_frames": int, "frame_times": list[float], "revision": str, "prompt_sha1": str}
    frames_in_model_step = False  # the model reads the processor's tensors, made in the workers

    def __init__(self, checkpoint: str, revision: str | None = None, num_frames: int = 64,
                 prompt: str = "Please describe this video in detail.", max_new_tokens: int = 256,
                 attn_implementation: str = "auto", dtype: str = "auto"):
        self.model_id, self.revision = checkpoint, revision
        self.num_frames, self.question, self.max_new_tokens = num_frames, prompt, max_new_tokens
        self.attn_implementation, self.dtype_name = attn_implementation, dtype
        self.media_spec = MediaSpec(num_frames=num_frames)
        self.model = self.processor = None

    def open(self, device: torch.device) -> None:
        self._use_processor(load_processor(self.model_id, self.revision), resolve_dtype(self.dtype_name, device), device)

    def load(self, device: torch.device) -> None:
        from transformers import LlavaOnevisionForConditionalGeneration

        self.model = load_model(LlavaOnevisionForConditionalGeneration, self.model_id, device, self.dtype, self.revision,
                                attn_implementation=pick_attention(self.attn_implementation))
        self.device = device

    def attach(self, processor, model, device: torch.device) -> None:
        """Use this processor and model (benchmarks attach full-size random ones built on the device)."""
        self._use_processor(processor, model.dtype, device)
        self.model, self.device = model, device

    def _use_processor(self, processor, dtype: torch.dtype, device: torch.device) -> None:
        self.processor, self.dtype = processor, dtype
        # normalising is CPU work on a CPU run (the workers do it) and nearly free on a GPU, where uint8 frames
        # travel 4 times lighter than floats
        self.normalise_on_device = device.type != "cpu"
        self.processor.tokenizer.padding_side = "left"  # generation continues every row from the right
        size = self.processor.video_processor.size
        height, width = (size["height"], size["width"]) if "height" in size else (size["shortest_edge"],) * 2
        # resized by the decoder as SigLIP's processor resizes (bicubic), so the processor leaves the size alone
        self.media_spec = MediaSpec(num_frames=self.num_frames, size=(height, width), resample="bicubic")
        self.prompt_hash = hashlib.sha1((TIME_INSTRUCTION + "\n" + self.question).encode()).hexdigest()[:12]

    def prompt_for(self, clip: Clip) -> str:
        times = clip.media.frame_times
        duration = clip.media.info.get("duration_s") or (clip.end - clip.start)
        instruction = TIME_INSTRUCTION.format(duration=duration, count=len(times), times=",".join(f"{t:.2f}s" for t in times))
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": f"{instruction}\n{self.question}"}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def prepare(self, clip: Clip) -> dict:
        """In a worker: the prompt's tokens, with the video placeholder expanded to the model's visual tokens, and
        the frames, normalised here on a CPU run, left uint8 for the GPU to normalise otherwise."""
        frames = torch.as_tensor(clip.media.frames)  # [T, H, W, 3], at the processor's size
        prompt = self.prompt_for(clip).replace(self.processor.video_token, self.processor.video_token * self.video_tokens(len(frames)))
        prepared = {"input_ids": self.processor.tokenizer(prompt, return_tensors="pt")["input_ids"][0],
                    "frame_times": clip.media.frame_times}
        if self.normalise_on_device:
            return prepared | {"frames": frames}
        return prepared | {"pixel_values_videos": self.pixel_values(frames)}

    def video_tokens(self, frames: int) -> int:
        """Visual tokens for `frames` frames in transformers' LLaVA-OneVision layout: each frame's patch grid
        pooled 2x2 (rounding up), one newline after the whole video."""
        side = math.isqrt(self.processor.num_image_tokens)  # 729 patches: 27 x 27
        return frames * math.ceil(side / 2) ** 2 + 1

    def pixel_values(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [T, H, W, 3] -> the processor's [1, T, 3, H, W]: rescaled and normalised in float32, then the model's dtype."""
        video = self.processor.video_processor
        mean = torch.tensor(video.image_mean, device=frames.device).view(1, 3, 1, 1)
        std = torch.tensor(video.image_std, device=frames.device).view(1, 3, 1, 1)
        pixels = frames.permute(0, 3, 1, 2).float() * video.rescale_factor
        return ((pixels - mean) / std).to(self.dtype)[None]

    def infer(self, clips: list[Clip]) -> list[Result]:
        return split_on_oom(self._generate, clips)

    def _generate(self, clips: list[Clip]) -> list[Result]:
        prepared = [clip.prepared if clip.prepared is not None else self.prepare(clip) for clip in clips]
        inputs = {name: value.to(self.device) for name, value in
                  left_pad([p["input_ids"] for p in prepared], self.processor.tokenizer.pad_token_id).items()}
        # each clip's frames to the device, normalised and batched there: no float copy of the batch on the host
        inputs["pixel_values_videos"] = torch.cat([p["pixel_values_videos"].to(self.device) if "pixel_values_videos" in p
                                                   else self.pixel_values(p["frames"].to(self.device, non_blocking=True))
                                                   for p in prepared])
        generations, _ = greedy_generate(self.model, self.processor.tokenizer, inputs, self.max_new_tokens)
        revision = self.revision or getattr(self.model.config, "_commit_hash", None)
        return [Result(fields={"caption": g.text, **g.fields(), "num_frames": len(p["frame_times"]),
                               "frame_times": p["frame_times"], "revision": revision, "prompt_sha1": self.prompt_hash})
                for p, g in zip(prepared, generations)]
