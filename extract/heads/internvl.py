"""internvl: a description of each keyframe from InternVL, and the vision tower's pooled features.

transformers' native `InternVLForConditionalGeneration`. Keyframes of every clip in the batch are
described in one left-padded greedy batch. The pooled embedding (mean over the vision tower's
patch tokens) is captured by a hook during the same forward pass, not computed twice.
"""

from __future__ import annotations

import numpy as np
import torch

from extract.decode import MediaSpec
from extract.generation import combined_confidence, greedy_generate
from extract.heads import Clip, Head, Result, load_generative, register


@register
class InternVL(Head):
    name = "internvl"

    def __init__(self, checkpoint: str, revision: str | None = None, num_keyframes: int = 4,
                 prompt: str = "Please describe the image in detail.", max_new_tokens: int = 128, max_patches: int = 1,
                 attn_implementation: str = "auto", dtype: str = "auto"):
        self.model_id, self.revision = checkpoint, revision
        self.question, self.max_new_tokens, self.max_patches = prompt, max_new_tokens, max_patches
        self.attn_implementation, self.dtype_name = attn_implementation, dtype
        self.media_spec = MediaSpec(num_frames=num_keyframes)

    def load(self, device: torch.device) -> None:
        from transformers import InternVLForConditionalGeneration

        self.attach(*load_generative(InternVLForConditionalGeneration, self, device), device)

    def attach(self, processor, model, device: torch.device) -> None:
        """Use this processor and model (benchmarks attach full-size random ones built on the device)."""
        self.processor, self.model = processor, model
        self.processor.tokenizer.padding_side = "left"
        if self.max_patches <= 1:  # one tile per keyframe: the decoder can resize to it; tiling needs the detail
            size = self.processor.image_processor.size
            self.media_spec = MediaSpec(num_frames=self.media_spec.num_frames, size=(size["height"], size["width"]))
        self.device = device
        self.prompt = self.processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.question}]}], add_generation_prompt=True)

    def infer(self, clips: list[Clip]) -> list[Result]:
        frames = [frame for clip in clips for frame in clip.media.frames]
        tiling = {"crop_to_patches": self.max_patches > 1, "max_patches": self.max_patches}
        inputs = self.processor(text=[self.prompt] * len(frames), images=frames, return_tensors="pt", padding=True, **tiling)
        tiles = (self.processor.image_processor(frames, return_tensors="pt", **tiling)["num_patches"].tolist()
                 if self.max_patches > 1 else [1] * len(frames))
        inputs = inputs.to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)

        captured = []
        hook = self.model.model.vision_tower.register_forward_hook(lambda module, args, output: captured.append(output.last_hidden_state))
        try:
            generations, _ = greedy_generate(self.model, self.processor.tokenizer, inputs, self.max_new_tokens)
        finally:
            hook.remove()
        patch_means = captured[0][:, 1:].float().mean(dim=1)  # [tiles, dim], the CLS token left out
        pooled = torch.stack([chunk.mean(dim=0) for chunk in patch_means.split(tiles)]).cpu().numpy().astype(np.float16)

        results, index = [], 0
        for clip in clips:
            count = len(clip.media.frame_times)
            parts = generations[index : index + count]
            confidence, mean_logprob = combined_confidence(parts)
            keyframes = [{"time": t, "description": g.text, **g.fields()} for t, g in zip(clip.media.frame_times, parts)]
            results.append(Result(
                fields={"keyframes": keyframes, "confidence": round(confidence, 6), "mean_logprob": round(mean_logprob, 6),
                        "feature_dim": int(pooled.shape[1]), "prompt": self.question,
                        "revision": self.revision or getattr(self.model.config, "_commit_hash", None)},
                arrays={"features": pooled[index : index + count]}))
            index += count
        return results
