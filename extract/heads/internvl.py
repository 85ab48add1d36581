"""internvl: a description of each keyframe from InternVL, and the vision tower's pooled features.

Each keyframe is an image fed as OpenGVLab/InternVL's chat README feeds one (`load_image`,
`dynamic_preprocess`, `build_transform`; `model.chat` with the `internvl2_5` template of
internvl_chat/internvl/conversation.py, which InternVL3.5 was trained with):

- Tiles: the frame resized (bicubic) to the grid of 448 px tiles whose aspect ratio is closest
  to its own, at most 12 tiles, cut row by row, plus a 448 px thumbnail of the whole frame when
  there is more than one tile; x / 255, ImageNet mean and std.
- Prompt: the template's system prompt, `<img>` + 256 `<IMG_CONTEXT>` per tile + `</img>`, a
  line break, the question; greedy decoding up to 1024 new tokens, bfloat16 on CUDA.
- Keyframes: the middle frames of equal segments of the clip (the README's `get_index`).

transformers' native `InternVLForConditionalGeneration` runs the model. Workers tile, normalise (on
a CPU run; a GPU normalises uint8 tiles itself) and tokenise; keyframes of every clip in the batch
are described in one left-padded greedy batch. The pooled embedding (the mean over the vision
tower's patch tokens of a keyframe's tiles) is captured by a hook during the same forward pass.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TypedDict

import numpy as np
import torch
import torch.nn.functional as F

from extract.decode import MediaSpec
from extract.errors import ConfigError
from extract.heads import (Clip, Head, Result, check_engine, end_tokens, generation_engine, load_config, load_model, load_tokenizer,
                           pick_attention, register, resolve_dtype, split_on_oom, with_preset)
from extract.models.generation import Request, combined_confidence, greedy_generate, left_pad, summarise

PRESETS = {
    "authors": {"max_tiles": 12, "max_new_tokens": 1024},
    # one 448 px tile a keyframe instead of up to 12 plus a thumbnail: up to 13 times fewer visual tokens, finer text and
    # small objects lost; descriptions cut at 128 tokens
    "fast": {"max_tiles": 1, "max_new_tokens": 128},
}
TILE = 448
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# conversation templates (internvl_chat/internvl/conversation.py), MPT style: (system message, separator). InternVL2.5,
# 3 and 3.5 were trained with internvl2_5; InternVL2 with internlm2-chat or Hermes-2 (its config names it)
SYSTEM = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
SYSTEM_V2 = "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
TEMPLATES = {"internvl2_5": (SYSTEM, "<|im_end|>\n"), "internlm2-chat": (SYSTEM_V2, "<|im_end|>"), "Hermes-2": (SYSTEM_V2, "<|im_end|>")}


class Keyframe(TypedDict):
    time: float  # presentation time (s)
    tiles: int
    description: str
    confidence: float
    mean_logprob: float
    num_tokens: int
    finish_reason: str


def tile_grid(width: int, height: int, max_tiles: int, size: int = TILE) -> tuple[int, int]:
    """(columns, rows) of tiles for an image, as dynamic_preprocess and find_closest_aspect_ratio choose them."""
    aspect = width / height
    ratios = sorted({(i, j) for n in range(1, max_tiles + 1) for i in range(1, n + 1) for j in range(1, n + 1)
                     if 1 <= i * j <= max_tiles}, key=lambda r: r[0] * r[1])
    best, best_difference = (1, 1), float("inf")
    for ratio in ratios:
        difference = abs(aspect - ratio[0] / ratio[1])
        if difference < best_difference:
            best, best_difference = ratio, difference
        elif difference == best_difference and width * height > 0.5 * size * size * ratio[0] * ratio[1]:
            best = ratio
    return best


def _resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 [H, W, 3] resized bicubic with antialiasing (PIL's default for RGB, to a level)."""
    if tuple(image.shape[:2]) == (height, width):
        return image
    return F.interpolate(image.permute(2, 0, 1)[None], size=(height, width), mode="bicubic", antialias=True)[0].permute(1, 2, 0)


def tiles_of(frame: torch.Tensor, max_tiles: int, size: int = TILE) -> torch.Tensor:
    """uint8 [H, W, 3] -> uint8 [tiles, size, size, 3]: the grid's tiles row by row, then the thumbnail if more than one."""
    height, width = frame.shape[:2]
    columns, rows = tile_grid(width, height, max_tiles, size)
    resized = _resize(frame, rows * size, columns * size)
    tiles = [resized[r * size : (r + 1) * size, c * size : (c + 1) * size] for r in range(rows) for c in range(columns)]
    if len(tiles) > 1:
        tiles.append(_resize(frame, size, size))
    return torch.stack(tiles).contiguous()


@register
class InternVL(Head):
    name = "internvl"
    requires = ("transformers",)
    fields = {"keyframes": list[Keyframe], "confidence": float, "mean_logprob": float, "feature_dim": int, "prompt": str,
              "preset": str, "revision": str}
    arrays = {"features": ("float16", 2)}
    frames_in_model_step = False
    device_batch_size = 64  # clips a model call on a GPU: their keyframes feed the generation engine's queue

    def __init__(self, checkpoint: str, revision: str | None = None, preset: str = "authors", num_keyframes: int = 4,
                 prompt: str = "Please describe the image in detail.", max_new_tokens: int | None = None,
                 max_tiles: int | None = None, attn_implementation: str = "auto", dtype: str = "auto",
                 trust_remote_code: bool = False, engine: str = "continuous", max_slots: int = 32):
        options = with_preset(self.name, PRESETS, preset, {"max_tiles": max_tiles, "max_new_tokens": max_new_tokens})
        self.engine_name, self.max_slots, self.engine = check_engine(self.name, engine, max_slots), max_slots, None
        self.model_id, self.revision, self.preset = checkpoint, revision, preset
        self.question, self.max_new_tokens, self.max_tiles = prompt, options["max_new_tokens"], options["max_tiles"]
        self.attn_implementation, self.dtype_name, self.trust_remote_code = attn_implementation, dtype, trust_remote_code
        self.num_keyframes, self.tile = num_keyframes, TILE
        self._set_view()

    def _set_view(self) -> None:
        # tiling needs the full frame; a single tile is the frame resized to the tile, which the decoder does
        size = {} if self.max_tiles > 1 else {"size": (self.tile, self.tile), "resample": "bicubic"}
        self.media_spec = MediaSpec(num_frames=self.num_keyframes, sampling="segments", **size)

    def open(self, device: torch.device) -> None:
        config = load_config(self.model_id, self.revision, option=f"model.{self.name}.checkpoint")
        tokenizer = load_tokenizer(self.model_id, self.revision, trust_remote_code=self.trust_remote_code,
                                   option=f"model.{self.name}.checkpoint")
        self._use(tokenizer, config, resolve_dtype(self.dtype_name, device), device)

    def load(self, device: torch.device) -> None:
        from transformers import InternVLForConditionalGeneration

        self.model = load_model(InternVLForConditionalGeneration, self.model_id, device, self.dtype, self.revision,
                                option=f"model.{self.name}.checkpoint", attn_implementation=pick_attention(self.attn_implementation))

    def attach(self, processor, model, device: torch.device) -> None:
        """Use this model and its processor's tokenizer (benchmarks attach full-size random ones built on the device)."""
        self._use(getattr(processor, "tokenizer", processor), model.config, model.dtype, device)
        self.model = model

    def _use(self, tokenizer, config, dtype: torch.dtype, device: torch.device) -> None:
        self.tokenizer, self.dtype, self.device = tokenizer, dtype, device
        self.tokenizer.padding_side = "left"
        self.image_token = config.image_token_id
        self.template = getattr(config, "template", None) or "internvl2_5"
        if self.template not in TEMPLATES:
            raise ConfigError(f"{self.model_id}: conversation template {self.template!r} is not one this head builds "
                              f"({', '.join(TEMPLATES)})")
        vision = config.vision_config
        self.tile = vision.image_size[0]  # 448
        self.tokens_per_tile = int((self.tile // vision.patch_size[0]) ** 2 * config.downsample_ratio ** 2)  # 256
        self.normalise_on_device = device.type != "cpu"
        self._set_view()

    def prompt_for(self, tiles: int) -> str:
        """The checkpoint's conversation template (MPT style) for one image of `tiles` tiles, as model.chat builds it."""
        system, sep = TEMPLATES[self.template]
        context = self.tokenizer.convert_ids_to_tokens(self.image_token)
        image = "<img>" + context * (self.tokens_per_tile * tiles) + "</img>"
        return f"<|im_start|>system\n{system}{sep}<|im_start|>user\n{image}\n{self.question}{sep}<|im_start|>assistant\n"

    def prepare(self, clip: Clip) -> dict:
        """In a worker: each keyframe's tiles and prompt tokens."""
        tiles = [tiles_of(frame, self.max_tiles, self.tile) for frame in torch.as_tensor(clip.media.frames)]
        input_ids = [self.tokenizer(self.prompt_for(len(t)), return_tensors="pt")["input_ids"][0] for t in tiles]
        prepared = {"input_ids": input_ids, "tiles": [len(t) for t in tiles], "frame_times": clip.media.frame_times}
        stacked = torch.cat(tiles)
        return prepared | ({"frames": stacked} if self.normalise_on_device else {"pixel_values": self.pixel_values(stacked)})

    def pixel_values(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 448, 448, 3] -> [N, 3, 448, 448]: x / 255, ImageNet's mean and std, in float32, then the model's dtype."""
        mean = torch.tensor(IMAGENET_MEAN, device=tiles.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=tiles.device).view(1, 3, 1, 1)
        return ((tiles.permute(0, 3, 1, 2).float() / 255 - mean) / std).to(self.dtype)

    def pixels_of(self, prepared: dict) -> torch.Tensor:
        """A clip's tiles as the vision tower reads them, on the device."""
        if "pixel_values" in prepared:
            return prepared["pixel_values"].to(self.device)
        return self.pixel_values(prepared["frames"].to(self.device, non_blocking=True))

    @contextmanager
    def tower_output(self):
        """The vision tower's last hidden states of every pass through it while inside."""
        captured = []
        hook = self.model.model.vision_tower.register_forward_hook(lambda module, args, output: captured.append(output.last_hidden_state))
        try:
            yield captured
        finally:
            hook.remove()

    def image_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the visual tokens of these tiles [tiles * 256, D], the vision tower's patch mean of each tile [tiles, dim]),
        from one pass through the tower: its output is caught on the way to the projector."""
        config = self.model.config
        with self.tower_output() as captured:
            features = self.model.model.get_image_features(pixel_values=pixel_values, vision_feature_layer=config.vision_feature_layer,
                                                           vision_feature_select_strategy=config.vision_feature_select_strategy)
        features = features if isinstance(features, torch.Tensor) else features.pooler_output  # transformers < 5.20: a tensor
        return features.reshape(-1, features.shape[-1]), captured[0][:, 1:].float().mean(dim=1)  # the CLS token left out

    def infer(self, clips: list[Clip]) -> list[Result]:
        return split_on_oom(self._describe, clips)

    def _describe(self, clips: list[Clip]) -> list[Result]:
        prepared = [clip.prepared if clip.prepared is not None else self.prepare(clip) for clip in clips]
        generations, pooled = self._generate_with_engine(prepared) if self.engine_name == "continuous" else self._generate(prepared)

        results, index = [], 0
        for p in prepared:
            count = len(p["frame_times"])
            parts = generations[index : index + count]
            confidence, mean_logprob = combined_confidence(parts)
            keyframes = [{"time": t, "tiles": n, "description": g.text, **g.fields()}
                         for t, n, g in zip(p["frame_times"], p["tiles"], parts)]
            results.append(Result(
                fields={"keyframes": keyframes, "confidence": round(confidence, 6), "mean_logprob": round(mean_logprob, 6),
                        "feature_dim": int(pooled.shape[1]), "prompt": self.question, "preset": self.preset,
                        "revision": self.revision or getattr(self.model.config, "_commit_hash", None)},
                arrays={"features": pooled[index : index + count]}))
            index += count
        return results

    def _generate_with_engine(self, prepared: list[dict]) -> tuple[list, np.ndarray]:
        """Every keyframe of the batch is one request of the engine; its tiles go through the tower when its slot is free."""
        keyframes = [(ids, pixels) for p in prepared for ids, pixels in zip(p["input_ids"], self.pixels_of(p).split(p["tiles"]))]
        pooled: list[torch.Tensor | None] = [None] * len(keyframes)

        def embeddings(index: int) -> torch.Tensor:
            ids, pixels = keyframes[index]
            ids = ids.to(self.device)
            visual, patch_means = self.image_features(pixels)
            pooled[index] = patch_means.mean(dim=0)
            embedded = self.model.get_input_embeddings()(ids)
            embedded[ids == self.image_token] = visual.to(embedded.dtype)
            return embedded

        requests = [Request(lambda i=i: embeddings(i), len(ids), self.max_new_tokens) for i, (ids, _) in enumerate(keyframes)]
        generations = [summarise(self.tokenizer, g.tokens, torch.tensor(g.logprobs), end_tokens(self.model))
                       for g in generation_engine(self).generate(requests)]
        return generations, torch.stack(pooled).cpu().numpy().astype(np.float16)

    def _generate(self, prepared: list[dict]) -> tuple[list, np.ndarray]:
        """transformers' `generate` over the batch's keyframes, left-padded (engine=generate)."""
        inputs = {name: value.to(self.device) for name, value in
                  left_pad([ids for p in prepared for ids in p["input_ids"]], self.tokenizer.pad_token_id).items()}
        inputs["pixel_values"] = torch.cat([self.pixels_of(p) for p in prepared])
        tiles = [count for p in prepared for count in p["tiles"]]
        with self.tower_output() as captured:
            generations, _ = greedy_generate(self.model, self.tokenizer, inputs, self.max_new_tokens)
        patch_means = captured[0][:, 1:].float().mean(dim=1)  # [tiles, dim], the CLS token left out
        pooled = torch.stack([chunk.mean(dim=0) for chunk in patch_means.split(tiles)]).cpu().numpy().astype(np.float16)
        return generations, pooled
