"""llava_video: LLaVA-Video-7B-Qwen2 captions with a confidence, batched, bf16 on CUDA.

The prompt is the one LLaVA-Video is evaluated with: the video's length and the times of the
sampled frames, then the question, in Qwen's chat format, decoded greedily. The decoder hands
over the frames at the processor's size; the processor (normalising, the prompt's tokens) runs
in the workers, and the main process only pads the batch and runs the model.
"""

from __future__ import annotations

import hashlib

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
        self._use_processor(load_processor(self.model_id, self.revision), resolve_dtype(self.dtype_name, device))

    def load(self, device: torch.device) -> None:
        from transformers import LlavaOnevisionForConditionalGeneration

        self.model = load_model(LlavaOnevisionForConditionalGeneration, self.model_id, device, self.dtype, self.revision,
                                attn_implementation=pick_attention(self.attn_implementation))
        self.device = device

    def attach(self, processor, model, device: torch.device) -> None:
        """Use this processor and model (benchmarks attach full-size random ones built on the device)."""
        self._use_processor(processor, model.dtype)
        self.model, self.device = model, device

    def _use_processor(self, processor, dtype: torch.dtype) -> None:
        self.processor, self.dtype = processor, dtype
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
        """In a worker: the prompt's tokens and the normalised frames, in the model's dtype."""
        inputs = self.processor(text=[self.prompt_for(clip)], videos=[torch.as_tensor(clip.media.frames)], return_tensors="pt",
                                do_sample_frames=False)
        return {"input_ids": inputs["input_ids"][0], "pixel_values_videos": inputs["pixel_values_videos"].to(self.dtype),
                "frame_times": clip.media.frame_times}

    def infer(self, clips: list[Clip]) -> list[Result]:
        return split_on_oom(self._generate, clips)

    def _generate(self, clips: list[Clip]) -> list[Result]:
        prepared = [clip.prepared if clip.prepared is not None else self.prepare(clip) for clip in clips]
        inputs = left_pad([p["input_ids"] for p in prepared], self.processor.tokenizer.pad_token_id)
        inputs["pixel_values_videos"] = torch.cat([p["pixel_values_videos"] for p in prepared])
        inputs = {name: value.to(self.device) for name, value in inputs.items()}
        generations, _ = greedy_generate(self.model, self.processor.tokenizer, inputs, self.max_new_tokens)
        revision = self.revision or getattr(self.model.config, "_commit_hash", None)
        return [Result(fields={"caption": g.text, **g.fields(), "num_frames": len(p["frame_times"]),
                               "frame_times": p["frame_times"], "revision": revision, "prompt_sha1": self.prompt_hash})
                for p, g in zip(prepared, generations)]
