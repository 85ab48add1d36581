"""llava_video: LLaVA-Video-7B-Qwen2 captions with a confidence, batched, bf16 on CUDA.

The prompt is the one LLaVA-Video is evaluated with: the video's length and the times of the
sampled frames, then the question, in Qwen's chat format, decoded greedily. Frames come
pre-sampled (uniform over the clip) and pre-resized by the decoder; the processor must not
resample them.
"""

from __future__ import annotations

import hashlib

import torch

from extract.decode import MediaSpec
from extract.generation import greedy_generate
from extract.heads import Clip, Head, Result, load_generative, register, split_on_oom

TIME_INSTRUCTION = ("The video lasts for {duration:.2f} seconds, and {count} frames are uniformly sampled from it. "
                    "These frames are located at {times}.Please answer the following questions related to this video.")


@register
class LlavaVideo(Head):
    name = "llava_video"

    def __init__(self, checkpoint: str, revision: str | None = None, num_frames: int = 64,
                 prompt: str = "Please describe this video in detail.", max_new_tokens: int = 256,
                 attn_implementation: str = "auto", dtype: str = "auto"):
        self.model_id, self.revision = checkpoint, revision
        self.num_frames, self.question, self.max_new_tokens = num_frames, prompt, max_new_tokens
        self.attn_implementation, self.dtype_name = attn_implementation, dtype
        self.media_spec = MediaSpec(num_frames=num_frames)
        self.model = self.processor = None

    def load(self, device: torch.device) -> None:
        from transformers import LlavaOnevisionForConditionalGeneration

        self.attach(*load_generative(LlavaOnevisionForConditionalGeneration, self, device), device)

    def attach(self, processor, model, device: torch.device) -> None:
        """Use this processor and model (benchmarks attach full-size random ones built on the device)."""
        self.processor, self.model = processor, model
        self.processor.tokenizer.padding_side = "left"  # generation continues every row from the right
        size = self.processor.video_processor.size
        height, width = (size["height"], size["width"]) if "height" in size else (size["shortest_edge"],) * 2
        self.media_spec = MediaSpec(num_frames=self.num_frames, size=(height, width))  # resized in the decoder
        self.device = device
        self.prompt_hash = hashlib.sha1((TIME_INSTRUCTION + "\n" + self.question).encode()).hexdigest()[:12]

    def prompt_for(self, clip: Clip) -> str:
        times = clip.media.frame_times
        duration = clip.media.info.get("duration_s") or (clip.end - clip.start)
        instruction = TIME_INSTRUCTION.format(duration=duration, count=len(times), times=",".join(f"{t:.2f}s" for t in times))
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": f"{instruction}\n{self.question}"}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def infer(self, clips: list[Clip]) -> list[Result]:
        return split_on_oom(self._generate, clips)

    def _generate(self, clips: list[Clip]) -> list[Result]:
        prompts = [self.prompt_for(clip) for clip in clips]
        videos = [torch.from_numpy(clip.media.frames) for clip in clips]  # [T, H, W, 3] uint8
        inputs = self.processor(text=prompts, videos=videos, return_tensors="pt", padding=True, do_sample_frames=False)
        inputs = inputs.to(self.device)
        inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(self.model.dtype)
        generations, _ = greedy_generate(self.model, self.processor.tokenizer, inputs, self.max_new_tokens)
        revision = self.revision or getattr(self.model.config, "_commit_hash", None)
        return [Result(fields={"caption": g.text, **g.fields(), "num_frames": len(clip.media.frame_times),
                               "frame_times": clip.media.frame_times, "revision": revision, "prompt_sha1": self.prompt_hash})
                for clip, g in zip(clips, generations)]
