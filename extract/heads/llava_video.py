"""llava_video: LLaVA-Video-7B-Qwen2 captions, run the way its authors run it, batched.

Read from LLaVA-VL/LLaVA-NeXT (docs/LLaVA_Video_1003.md, llava/model/llava_arch.py,
llava/conversation.py, llava/model/multimodal_encoder/siglip_encoder.py):

- Frames: indices int(linspace(0, total - 1, 64)) over the clip's decoded frames, both ends
  included; each frame's time index / average fps from the clip's first frame; the video's length
  total / average fps (`load_video(..., force_sample=True)`).
- Pixels: SigLIP's preprocessing, a bicubic resize to 384x384 (done by the decoder, as PIL's to a
  level), then x / 255, mean and std 0.5.
- Prompt: the `qwen_1_5` conversation with its system prompt; the video placeholder then the
  time instruction with no line break between them, a line break, the question.
- Visual tokens: SigLIP's last kept layer, the 2-layer projector, each frame's 27x27 grid pooled
  bilinearly to 14x14 (`get_2dPool`, `mm_spatial_pool_mode: bilinear`), and a newline embedding
  after every row of every frame (`mm_newline_position: grid`): 210 tokens a frame. transformers'
  LlavaOnevision puts one newline after the whole video instead, so this head builds the input
  embeddings itself from the checkpoint's modules and generates from them.
- Greedy decoding in bfloat16 on CUDA, up to 1024 new tokens.

Workers tokenise the prompt and hand the frames over as uint8 (normalised there on a CPU run); the
main process normalises on the GPU, encodes, and generates.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F

from extract.decode import MediaSpec
from extract.heads import (Clip, Head, Result, check_engine, end_tokens, generation_engine, load_config, load_model, load_tokenizer,
                           pick_attention, register, resolve_dtype, split_on_oom, with_preset)
from extract.models.generation import Request, greedy_generate, left_pad, summarise

PRESETS = {
    "authors": {"num_frames": 64, "max_new_tokens": 1024},
    # half the frames: half the visual tokens (13,440 -> 6,720) and about half the prefill; captions cut at 256
    # tokens (finish_reason "length" says which)
    "fast": {"num_frames": 32, "max_new_tokens": 256},
}
SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"  # conv_qwen, llava/conversation.py
TIME_INSTRUCTION = ("The video lasts for {duration:.2f} seconds, and {count} frames are uniformly sampled from it. "
                    "These frames are located at {times}.Please answer the following questions related to this video.")
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)  # SigLipImageProcessor, siglip_encoder.py
POOL_STRIDE = 2  # get_2dPool's default, the one prepare_inputs_labels_for_multimodal uses


@register
class LlavaVideo(Head):
    name = "llava_video"
    requires = ("transformers",)
    fields = {"caption": str, "confidence": float, "mean_logprob": float, "num_tokens": int, "finish_reason": str,
              "num_frames": int, "frame_times": list[float], "video_s": float, "preset": str, "revision": str,
              "prompt_sha1": str}
    frames_in_model_step = False  # the model reads what the workers made of the frames
    device_batch_size = 64  # clips a model call on a GPU: the generation engine's queue

    def __init__(self, checkpoint: str, revision: str | None = None, preset: str = "authors", num_frames: int | None = None,
                 prompt: str = "Please describe this video in detail.", max_new_tokens: int | None = None,
                 attn_implementation: str = "auto", dtype: str = "auto", engine: str = "continuous", max_slots: int = 32):
        options = with_preset(self.name, PRESETS, preset, {"num_frames": num_frames, "max_new_tokens": max_new_tokens})
        self.engine_name, self.max_slots, self.engine = check_engine(self.name, engine, max_slots), max_slots, None
        self.model_id, self.revision, self.preset = checkpoint, revision, preset
        self.num_frames, self.max_new_tokens, self.question = options["num_frames"], options["max_new_tokens"], prompt
        self.attn_implementation, self.dtype_name = attn_implementation, dtype
        self.media_spec = MediaSpec(num_frames=self.num_frames, sampling="linspace", size=(384, 384), resample="bicubic")
        self.prompt_hash = hashlib.sha1((SYSTEM + TIME_INSTRUCTION + "\n" + prompt).encode()).hexdigest()[:12]
        self.model = self.tokenizer = None

    def open(self, device: torch.device) -> None:
        config = load_config(self.model_id, self.revision, option=f"model.{self.name}.checkpoint")
        self._use(load_tokenizer(self.model_id, self.revision, option=f"model.{self.name}.checkpoint"), config, resolve_dtype(self.dtype_name, device), device)

    def load(self, device: torch.device) -> None:
        from transformers import LlavaOnevisionForConditionalGeneration

        self.model = load_model(LlavaOnevisionForConditionalGeneration, self.model_id, device, self.dtype, self.revision,
                                option=f"model.{self.name}.checkpoint", attn_implementation=pick_attention(self.attn_implementation))

    def attach(self, processor, model, device: torch.device) -> None:
        """Use this model and its processor's tokenizer (benchmarks attach full-size random ones built on the device)."""
        self._use(getattr(processor, "tokenizer", processor), model.config, model.dtype, device)
        self.model = model

    def _use(self, tokenizer, config, dtype: torch.dtype, device: torch.device) -> None:
        self.tokenizer, self.dtype, self.device = tokenizer, dtype, device
        self.video_token = config.video_token_index
        self.vocab_rows = authors_vocabulary(tokenizer, {config.video_token_index, config.image_token_index})
        vision = config.vision_config
        side = vision.image_size // vision.patch_size  # 27 patches a side
        self.pooled = math.ceil(side / POOL_STRIDE)  # 14
        self.media_spec = MediaSpec(num_frames=self.num_frames, sampling="linspace", size=(vision.image_size, vision.image_size),
                                    resample="bicubic")  # the tower's size (384), resized as SigLIP's processor resizes
        # normalising is CPU work on a CPU run (the workers do it) and nearly free on a GPU, where uint8 frames
        # travel 4 times lighter than floats
        self.normalise_on_device = device.type != "cpu"

    @property
    def tokens_per_frame(self) -> int:
        return self.pooled * (self.pooled + 1)  # rows of pooled patches, each closed by a newline

    @staticmethod
    def frame_times(media) -> tuple[list[float], float]:
        """(the sampled frames' times, the video's length), as load_video computes them: frame index / average fps."""
        video = media.video
        fps = video.get("fps_header") or video.get("fps")
        return [round(index / fps, 2) for index in media.frame_indices], video["num_frames"] / fps

    def prompt_for(self, clip: Clip) -> str:
        """The prompt with one video placeholder token, where the visual tokens go."""
        times, duration = self.frame_times(clip.media)
        instruction = TIME_INSTRUCTION.format(duration=duration, count=len(times), times=",".join(f"{t:.2f}s" for t in times))
        placeholder = self.tokenizer.convert_ids_to_tokens(self.video_token)
        return f"{SYSTEM}<|im_start|>user\n{placeholder}{instruction}\n{self.question}<|im_end|>\n<|im_start|>assistant\n"

    def prepare(self, clip: Clip) -> dict:
        """In a worker: the prompt's tokens with the placeholder repeated once per visual token, and the frames."""
        frames = torch.as_tensor(clip.media.frames)  # [T, 384, 384, 3] uint8, at the tower's size
        ids = self.tokenizer(self.prompt_for(clip), return_tensors="pt")["input_ids"][0]
        at = (ids == self.video_token).nonzero()[0, 0]
        visual = torch.full((len(frames) * self.tokens_per_frame,), self.video_token, dtype=ids.dtype)
        prepared = {"input_ids": torch.cat([ids[:at], visual, ids[at + 1:]]), "frame_times": self.frame_times(clip.media)[0],
                    "video_s": round(self.frame_times(clip.media)[1], 3)}
        if self.normalise_on_device:
            return prepared | {"frames": frames}
        return prepared | {"pixel_values": self.pixel_values(frames)}

    def pixel_values(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [T, H, W, 3] -> [T, 3, H, W]: x / 255, SigLIP's mean and std, in float32, then the model's dtype."""
        mean = torch.tensor(SIGLIP_MEAN, device=frames.device).view(1, 3, 1, 1)
        std = torch.tensor(SIGLIP_STD, device=frames.device).view(1, 3, 1, 1)
        return ((frames.permute(0, 3, 1, 2).float() / 255 - mean) / std).to(self.dtype)

    def visual_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[T, 3, H, W] -> [T * 14 * 15, D]: the checkpoint's tower and projector, bilinear 2x2 pooling, a newline after every row."""
        core = self.model.model
        config = self.model.config
        hidden = core.vision_tower(pixel_values, output_hidden_states=True).hidden_states[config.vision_feature_layer]
        if config.vision_feature_select_strategy == "default":
            hidden = hidden[:, 1:]
        features = core.multi_modal_projector(hidden)  # [T, 729, D]
        frames, patches, dim = features.shape
        side = math.isqrt(patches)
        grid = features.view(frames, side, side, dim).permute(0, 3, 1, 2)
        pooled = F.interpolate(grid, size=(self.pooled, self.pooled), mode="bilinear").permute(0, 2, 3, 1)
        newline = core.image_newline.to(pooled.dtype).expand(frames, self.pooled, 1, dim)
        return torch.cat([pooled, newline], dim=2).reshape(-1, dim)

    def infer(self, clips: list[Clip]) -> list[Result]:
        return split_on_oom(self._generate, clips)

    def prompt_embeddings(self, prepared: dict) -> torch.Tensor:
        """One clip's prompt as the language model reads it, [tokens, D]: the prompt's embeddings with the clip's visual
        tokens in its placeholder slots."""
        ids = prepared["input_ids"].to(self.device)
        pixels = prepared["pixel_values"].to(self.device) if "pixel_values" in prepared \
            else self.pixel_values(prepared["frames"].to(self.device, non_blocking=True))
        embeddings = self.model.get_input_embeddings()(ids)
        embeddings[ids == self.video_token] = self.visual_tokens(pixels).to(embeddings.dtype)
        return embeddings

    def model_inputs(self, prepared: list[dict]) -> dict:
        """The batch as transformers' `generate` reads it: left-padded prompt embeddings (padding: the pad token's)."""
        pad = left_pad([p["input_ids"] for p in prepared], self.tokenizer.pad_token_id)
        embeddings = self.model.get_input_embeddings()(pad["input_ids"].to(self.device))
        for row, p in enumerate(prepared):
            embeddings[row, pad["input_ids"].shape[1] - len(p["input_ids"]):] = self.prompt_embeddings(p)
        return {"inputs_embeds": embeddings, "attention_mask": pad["attention_mask"].to(self.device)}

    def _generate(self, clips: list[Clip]) -> list[Result]:
        prepared = [clip.prepared if clip.prepared is not None else self.prepare(clip) for clip in clips]
        if self.engine_name == "generate":
            generations, _ = greedy_generate(self.model, self.tokenizer, self.model_inputs(prepared), self.max_new_tokens,
                                             self.vocab_rows)
        else:
            requests = [Request(lambda p=p: self.prompt_embeddings(p), len(p["input_ids"]), self.max_new_tokens) for p in prepared]
            generations = [summarise(self.tokenizer, g.tokens, torch.tensor(g.logprobs), end_tokens(self.model))
                           for g in generation_engine(self).generate(requests)]
        revision = self.revision or getattr(self.model.config, "_commit_hash", None)
        return [Result(fields={"caption": g.text, **g.fields(), "num_frames": len(p["frame_times"]), "frame_times": p["frame_times"],
                               "video_s": p["video_s"], "preset": self.preset, "revision": revision, "prompt_sha1": self.prompt_hash})
                for p, g in zip(prepared, generations)]


def authors_vocabulary(tokenizer, placeholders: set[int]) -> int:
    """The vocabulary rows LLaVA-NeXT's model has: its loader cuts the embedding and lm_head to its tokenizer's length
    (llava/model/builder.py: 151,646 of LLaVA-Video-7B's 152,064 rows), and that tokenizer has no <image> or <video>
    (the splice uses index -200). A converted tokenizer adds those placeholders at its end: they are not the authors'
    rows either. Captions and log-probabilities come from these rows only."""
    rows = len(tokenizer)
    while rows - 1 in placeholders:
        rows -= 1
    return rows
