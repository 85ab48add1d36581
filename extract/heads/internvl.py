"""internvl: a description of each keyframe from InternVL, and the vision tower's pooled features.

transformers' native `InternVLForConditionalGeneration`. The processor (tiling, normalising, the
prompt's tokens) runs in the workers; keyframes of every clip in the batch are described in one
left-padded greedy batch. The pooled embedding (mean over the vision tower's patch tokens) is
captured by a hook during the same forward pass, not computed twice.
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np
import torch

from extract.decode import MediaSpec
from extract.generation import combined_confidence, greedy_generate, left_pad
from extract.heads import Clip, Head, Result, load_model, load_processor, pick_attention, register, resolve_dtype


class Keyframe(TypedDict):
    time: float  # presentation time (s)
    description: str
    confidence: float
    mean_logprob: float
    num_tokens: int
    finish_reason: str


@register
class InternVL(Head):
    name = "internvl"
    requires = ("transformers",)
    fields = {"keyframes": list[Keyframe], "confidence": float, "mean_logprob": float, "feature_dim": int, "prompt": str,
              "revision": str}
    frames_in_model_step = False

    def __init__(self, checkpoint: str, revision: str | None = None, num_keyframes: int = 4,
                 prompt: str = "Please describe the image in detail.", max_new_tokens: int = 128, max_patches: int = 1,
                 attn_implementation: str = "auto", dtype: str = "auto"):
        self.model_id, self.revision = checkpoint, revision
        self.question, self.max_new_tokens, self.max_patches = prompt, max_new_tokens, max_patches
        self.attn_implementation, self.dtype_name = attn_implementation, dtype
        self.media_spec = MediaSpec(num_frames=num_keyframes)

    def open(self, device: torch.device) -> None:
        self._use_processor(load_processor(self.model_id, self.revision), resolve_dtype(self.dtype_name, device))

    def load(self, device: torch.device) -> None:
        from transformers import InternVLForConditionalGeneration

        self.model = load_model(InternVLForConditionalGeneration, self.model_id, device, self.dtype, self.revision,
                                attn_implementation=pick_attention(self.attn_implementation))
        self.device = device

    def attach(self, processor, model, device: torch.device) -> None:
        """Use this processor and model (benchmarks attach full-size random ones built on the device)."""
        self._use_processor(processor, model.dtype)
        self.model, self.device = model, device

    def _use_processor(self, processor, dtype: torch.dtype) -> None:
        self.processor, self.dtype = processor, dtype
        self.processor.tokenizer.padding_side = "left"
        if self.max_patches <= 1:  # one tile per keyframe: the decoder can resize to it; tiling needs the detail
            size = self.processor.image_processor.size
            self.media_spec = MediaSpec(num_frames=self.media_spec.num_frames, size=(size["height"], size["width"]),
                                        resample="bicubic")
        self.prompt = self.processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.question}]}], add_generation_prompt=True)

    def prepare(self, clip: Clip) -> dict:
        """In a worker: each keyframe's prompt tokens and tiles, in the model's dtype."""
        frames = list(np.asarray(clip.media.frames))
        tiling = {"crop_to_patches": self.max_patches > 1, "max_patches": self.max_patches}
        inputs = self.processor(text=[self.prompt] * len(frames), images=frames, return_tensors="pt", padding=True, **tiling)
        tiles = (self.processor.image_processor(frames, return_tensors="pt", **tiling)["num_patches"].tolist()
                 if self.max_patches > 1 else [1] * len(frames))
        mask = inputs["attention_mask"].bool()
        return {"input_ids": [ids[keep] for ids, keep in zip(inputs["input_ids"], mask)], "tiles": tiles,
                "pixel_values": inputs["pixel_values"].to(self.dtype), "frame_times": clip.media.frame_times}

    def infer(self, clips: list[Clip]) -> list[Result]:
        prepared = [clip.prepared if clip.prepared is not None else self.prepare(clip) for clip in clips]
        inputs = {name: value.to(self.device) for name, value in
                  left_pad([ids for p in prepared for ids in p["input_ids"]], self.processor.tokenizer.pad_token_id).items()}
        inputs["pixel_values"] = torch.cat([p["pixel_values"].to(self.device, non_blocking=True) for p in prepared])
        tiles = [count for p in prepared for count in p["tiles"]]

        captured = []
        hook = self.model.model.vision_tower.register_forward_hook(lambda module, args, output: captured.append(output.last_hidden_state))
        try:
            generations, _ = greedy_generate(self.model, self.processor.tokenizer, inputs, self.max_new_tokens)
        finally:
            hook.remove()
        patch_means = captured[0][:, 1:].float().mean(dim=1)  # [tiles, dim], the CLS token left out
        pooled = torch.stack([chunk.mean(dim=0) for chunk in patch_means.split(tiles)]).cpu().numpy().astype(np.float16)

        results, index = [], 0
        for p in prepared:
            count = len(p["frame_times"])
            parts = generations[index : index + count]
            confidence, mean_logprob = combined_confidence(parts)
            keyframes = [{"time": t, "description": g.text, **g.fields()} for t, g in zip(p["frame_times"], parts)]
            results.append(Result(
                fields={"keyframes": keyframes, "confidence": round(confidence, 6), "mean_logprob": round(mean_logprob, 6),
                        "feature_dim": int(pooled.shape[1]), "prompt": self.question,
                        "revision": self.revision or getattr(self.model.config, "_commit_hash", None)},
                arrays={"features": pooled[index : index + count]}))
            index += count
        return results
