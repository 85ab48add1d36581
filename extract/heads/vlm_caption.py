"""vlm_caption: captions from any transformers video-language model the user names (Qwen3-VL, Qwen2.5-VL,
LLaVA-OneVision, InternVL3.5 in transformers' format, ...), run the way its processor prescribes.

- Frames: the indices the checkpoint's own video processor samples (`sample_frames` on the clip's frame count and
  declared rate: Qwen's 2 frames a second, for instance), decoded once at the clip's own size in the workers. A
  processor that prescribes no sampling (LLaVA-OneVision's takes what it is given) samples 32 by its uniform rule;
  `num_frames` or `fps` ask the processor's rule for another count or rate.
- Prompt: the checkpoint's chat template, applied by its processor to one user turn (the video, then the prompt),
  with the generation prompt; the processor then makes the pixels and expands the video placeholder (with the frame
  times where the processor writes them, as Qwen3-VL's does), given the frames and their metadata. Workers do this.
  Qwen's video processors are asked for qwen-vl-utils' per-frame pixel budget (`cap_pixels_per_frame`), which
  transformers applies only when asked.
- Generation: greedy, through the generation engine when it runs the model's language model (the engine takes the
  embeddings, rotary positions and DeepStack features the model itself hands its language model), else through
  transformers' `generate`; the record names which (`engine`).
"""

from __future__ import annotations

import copy
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from extract.decode import MediaSpec
from extract.errors import ConfigError
from extract.heads import (Clip, Head, Result, check_engine, checkpoint_error, end_tokens, generation_engine, load_model,
                           load_processor, local_checkpoint, pick_attention, register, resolve_dtype, split_on_oom, with_preset)
from extract.models.generation import Prompt, Request, greedy_generate, summarise

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = "Qwen/Qwen3-VL-8B-Instruct"
PRESETS = {
    "authors": {"max_new_tokens": 1024},  # the processor's frames and pixels
    "fast": {"max_new_tokens": 256},  # captions cut at 256 tokens (finish_reason "length" says which)
}
FALLBACK_FRAMES = 32  # for a processor that prescribes no sampling
# what a model may hand its language model that the engine knows how to run (the rest of the keywords are None)
ENGINE_KNOWS = {"inputs_embeds", "position_ids", "attention_mask", "cache", "past_key_values", "use_cache", "return_dict",
                "visual_pos_masks", "deepstack_visual_embeds", "cache_position", "output_attentions", "output_hidden_states"}


class _Stop(Exception):
    """Raised once the model has made its language model's inputs: the rest of its forward is the engine's."""


class EngineCannotRun(Exception):
    pass


@register
class VlmCaption(Head):
    name = "vlm_caption"
    requires = ("transformers",)
    fields = {"caption": str, "confidence": float, "mean_logprob": float, "num_tokens": int, "finish_reason": str,
              "num_frames": int, "frame_times": list[float], "revision": str, "prompt_sha1": str,
              "engine": str, "preset": str}
    frames_in_model_step = False  # the model reads what the workers' processor made of the frames
    device_batch_size = 64  # clips a model call on a GPU: the generation engine's queue

    def __init__(self, checkpoint: str = DEFAULT_CHECKPOINT, revision: str | None = None, preset: str = "authors",
                 prompt: str = "Describe this video in detail.", num_frames: int | None = None, fps: float | None = None,
                 processor_options: dict | None = None, max_new_tokens: int | None = None, attn_implementation: str = "auto",
                 dtype: str = "auto", engine: str = "continuous", max_slots: int = 32):
        options = with_preset(self.name, PRESETS, preset, {"max_new_tokens": max_new_tokens})
        if num_frames is not None and num_frames < 1 or fps is not None and fps <= 0:
            raise ValueError("num_frames must be at least 1 and fps above 0")
        if num_frames is not None and fps is not None:
            raise ValueError("give num_frames or fps, not both")
        self.engine_name, self.max_slots, self.engine = check_engine(self.name, engine, max_slots), max_slots, None
        self.model_id, self.revision, self.preset, self.question = checkpoint, revision, preset, prompt
        self.num_frames, self.fps, self.processor_options = num_frames, fps, dict(processor_options or {})
        self.max_new_tokens = options["max_new_tokens"]
        self.attn_implementation, self.dtype_name = attn_implementation, dtype
        self.option = f"model.{self.name}.checkpoint"
        self.media_spec = None  # the processor's frame rule, once the checkpoint is found (`open`)
        self.model = self.processor = None
        self.engine_problem: str | None = None  # why the engine cannot run this model (then: generate)

    # ------------------------------------------------------------------------------------------------ set-up

    def open(self, device: torch.device) -> None:
        """The processor, and one line before any work if the checkpoint is missing or is no video-language model."""
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        folder = local_checkpoint(self.model_id, self.revision, self.option)
        try:
            config = AutoConfig.from_pretrained(folder)
        except (OSError, ValueError) as exc:
            raise checkpoint_error(self.model_id, exc, option=self.option) from exc
        if config.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
            raise ConfigError(f"checkpoint {self.model_id!r} is a {config.model_type} model, not a video-language model "
                              f"(transformers' image-text-to-text models); point {self.option} at one, e.g. {DEFAULT_CHECKPOINT}")
        self.processor = load_processor(self.model_id, self.revision, option=self.option)
        if getattr(self.processor, "video_processor", None) is None:
            raise ConfigError(f"checkpoint {self.model_id!r} ({config.model_type}) takes no video: its processor has no video "
                              f"processor; point {self.option} at a video-language model, e.g. {DEFAULT_CHECKPOINT}")
        if getattr(self.processor, "chat_template", None) is None:
            raise ConfigError(f"checkpoint {self.model_id!r} has no chat template (chat_template.jinja or .json beside its "
                              f"processor); point {self.option} at an instruction-tuned checkpoint")
        self._use(self.processor, resolve_dtype(self.dtype_name, device), device, self.revision or getattr(config, "_commit_hash", None))

    def attach(self, processor, model, device: torch.device) -> None:
        """Use this processor and model (benchmarks attach full-size random ones built on the device)."""
        self._use(processor, model.dtype, device, None)
        self.model, self.engine_problem = model, engine_problem(model)

    def _use(self, processor, dtype: torch.dtype, device: torch.device, commit: str | None) -> None:
        self.processor, self.dtype, self.device, self.commit = processor, dtype, device, commit
        rule = ProcessorFrames(f"{self.model_id}@{commit}", self.num_frames, self.fps, processor.video_processor)
        self.media_spec = MediaSpec(sampling="rule", index_rule=rule)
        # Qwen's video processors in transformers leave out the per-frame pixel budget of Qwen's own qwen-vl-utils unless
        # asked (cap_pixels_per_frame: None means "not chosen", and they say it becomes the default): ask for the authors'
        self.processor_call_options = dict(self.processor_options)
        if getattr(processor.video_processor, "cap_pixels_per_frame", False) is None:
            self.processor_call_options.setdefault("cap_pixels_per_frame", True)

    def load(self, device: torch.device) -> None:
        from transformers import AutoModelForImageTextToText

        self.model = load_model(AutoModelForImageTextToText, self.model_id, device, self.dtype, self.revision,
                                option=self.option, attn_implementation=pick_attention(self.attn_implementation))
        self.engine_problem = engine_problem(self.model)
        if self.engine_name == "continuous" and self.engine_problem:
            log.warning("vlm_caption: the generation engine cannot run %s (%s); captions come from transformers' generate",
                        self.model_id, self.engine_problem)

    # ------------------------------------------------------------------------------------------------ workers

    @staticmethod
    def metadata(total: int, fps: float, indices: list[int] | None):
        from transformers.video_utils import VideoMetadata

        return VideoMetadata(total_num_frames=total, fps=fps, duration=total / fps if fps else None, frames_indices=indices)

    def messages(self) -> list[dict]:
        return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": self.question}]}]

    def prepare(self, clip: Clip) -> dict:
        """In a worker: the chat template's text and the processor's tensors for the sampled frames."""
        video = clip.media.video
        fps = video.get("fps_header") or video.get("fps")
        total = video.get("num_frames") or len(clip.media.frame_indices)
        indices = list(clip.media.frame_indices)
        text = self.processor.apply_chat_template(self.messages(), add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=[text], videos=[np.asarray(clip.media.frames)], return_tensors="pt",
                                video_metadata=[self.metadata(total, fps or 1.0, indices)], do_sample_frames=False,
                                **self.processor_call_options)
        times = [round(i / fps, 3) for i in indices] if fps else list(clip.media.frame_times)
        return {"inputs": dict(inputs), "frame_times": times, "prompt_sha1": hashlib.sha1(text.encode()).hexdigest()[:12]}

    # ------------------------------------------------------------------------------------------------ model step

    def infer(self, clips: list[Clip]) -> list[Result]:
        return split_on_oom(self._generate, clips)

    def _generate(self, clips: list[Clip]) -> list[Result]:
        prepared = [clip.prepared if clip.prepared is not None else self.prepare(clip) for clip in clips]
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        engine = "generate"
        if self.engine_name == "continuous" and not self.engine_problem:
            try:
                requests = [Request(lambda p=p: self.prompt(p["inputs"]), p["inputs"]["input_ids"].shape[1], self.max_new_tokens)
                            for p in prepared]
                generations = [summarise(tokenizer, g.tokens, torch.tensor(g.logprobs), end_tokens(self.model))
                               for g in generation_engine(self).generate(requests)]
                engine = "continuous"
            except EngineCannotRun as exc:
                self.engine_problem = str(exc)
                log.warning("vlm_caption: the generation engine cannot run %s (%s); captions come from transformers' generate",
                            self.model_id, exc)
        if engine == "generate":
            generations = [greedy_generate(self.model, tokenizer, self._on_device(p["inputs"]), self.max_new_tokens)[0][0]
                           for p in prepared]
        return [Result(fields={"caption": g.text, **g.fields(), "num_frames": len(p["frame_times"]), "frame_times": p["frame_times"],
                               "revision": self.commit, "prompt_sha1": p["prompt_sha1"],
                               "engine": engine, "preset": self.preset})
                for p, g in zip(prepared, generations)]

    def _on_device(self, inputs: dict) -> dict:
        """The processor's tensors on the model's device, the pixels in the model's dtype; other floats (Qwen2.5-VL's
        seconds per temporal patch, which place the visual tokens in time) stay as the processor made them."""
        moved = {}
        for name, value in inputs.items():
            if torch.is_tensor(value):
                value = value.to(self.device, self.dtype) if name.startswith("pixel_values") else value.to(self.device)
            moved[name] = value
        return moved

    @torch.inference_mode()
    def prompt(self, inputs: dict) -> Prompt:
        """What the model itself hands its language model for this clip (the embeddings with the visual tokens spliced
        in, the rotary positions, DeepStack's features), caught at the language model's door."""
        caught = {}

        def stop(module, args, kwargs):
            caught.update(kwargs)
            raise _Stop

        handle = self.model.model.language_model.register_forward_pre_hook(stop, with_kwargs=True)
        try:
            self.model.model(**self._on_device(inputs))
        except _Stop:
            pass
        finally:
            handle.remove()
        unknown = sorted(name for name, value in caught.items() if value is not None and name not in ENGINE_KNOWS)
        if unknown:
            raise EngineCannotRun(f"its language model takes {', '.join(unknown)}")
        mask = caught.get("attention_mask")  # [1, length], every token attended (1 or True): causal attention alone
        if mask is not None and not (torch.is_tensor(mask) and mask.ndim == 2 and bool(mask.bool().all())):
            raise EngineCannotRun("its language model takes an attention mask of its own, not causal attention alone")
        embeddings = caught["inputs_embeds"][0]
        length = embeddings.shape[0]
        if length != inputs["input_ids"].shape[1]:
            raise EngineCannotRun(f"its language model reads {length} positions for {inputs['input_ids'].shape[1]} tokens")
        positions, offset = caught.get("position_ids"), 0
        if positions is not None and positions.ndim == 3:  # multimodal rotary positions [axes, batch, length]
            positions = positions[:, 0]
            if positions.shape[0] != generation_engine(self).rope_axes:  # Qwen's packed form (a text row first) among them
                raise EngineCannotRun(f"its rotary positions have {positions.shape[0]} axes")
            offset = int(positions.max()) + 1 - length  # Qwen's rope delta: decode goes on from the highest position
        elif positions is not None:
            if not torch.equal(positions.reshape(-1).cpu(), torch.arange(length)):
                raise EngineCannotRun("its language model takes positions other than 0, 1, 2, ...")
            positions = None
        deepstack, visual = caught.get("deepstack_visual_embeds"), caught.get("visual_pos_masks")
        return Prompt(embeddings, positions, offset, deepstack, visual[0] if visual is not None else None)


@dataclass(frozen=True)
class ProcessorFrames:
    """The frames a checkpoint's video processor samples from a clip of `total` frames at `fps`: its own rule
    (`sample_frames`), with `num_frames` or `fps` in place of its own when given, and 32 frames when it prescribes
    neither a count nor a rate (transformers' uniform rule then: frame i * total // 32). A count is at most the clip's
    frames. A clip too short for the rule (Qwen2-VL's rounds counts up to whole temporal patches, past a 15-frame
    clip's end) gets every frame, as the processor takes frames it is handed (padding the last temporal patch).
    It travels to the decoding process; equal rules (same checkpoint and options) compare equal there."""

    checkpoint: str
    num_frames: int | None
    fps: float | None
    video_processor: Any = field(compare=False, repr=False)

    def __call__(self, total: int, fps: float | None) -> list[int]:
        processor = self.video_processor
        prescribed = getattr(processor, "num_frames", None) or getattr(processor, "fps", None)
        count = self.num_frames or (None if prescribed or self.fps else FALLBACK_FRAMES)
        count = min(count, total) if count else None
        options = {}
        if count or self.fps:
            # given as arguments (Qwen3-VL's rule reads only those) and as the copy's own (Qwen2-VL's falls back to
            # its own rate when given none, and refuses a count with a rate)
            processor = copy.copy(processor)
            processor.num_frames, processor.fps = count, self.fps
            options = {"num_frames": count, "fps": self.fps}
        try:
            indices = processor.sample_frames(VlmCaption.metadata(total, fps, None), **options)
        except (ValueError, ZeroDivisionError):
            if total > (count or FALLBACK_FRAMES):  # not a short clip: the rule's refusal is this clip's error
                raise
            return list(range(total))
        return [int(i) for i in np.asarray(indices)]


def engine_problem(model) -> str | None:
    """Why the generation engine cannot run this model's language model, or None."""
    core = getattr(model, "model", None)
    language_model = getattr(core, "language_model", None)
    if language_model is None or getattr(model, "lm_head", None) is None:
        return "no language_model and lm_head where transformers' video-language models keep them"
    missing = [part for part in ("embed_tokens", "layers", "norm", "rotary_emb") if not hasattr(language_model, part)]
    if missing:
        return f"its language model has no {', '.join(missing)}"
    if "sliding_attention" in (getattr(language_model.config, "layer_types", None) or ()):
        return "its language model has sliding-window layers"
    return None
