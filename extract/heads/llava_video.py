"""llava_video: LLaVA-Video-7B-Qwen2 captions with a confidence, batched, bf16 on CUDA.

The prompt is the one LLaVA-Video is evaluated with: the video's length and the times of the
sampled frames, then the question, in Qwen's chat format, decoded greedily. Frames come
pre-sampled (uniform over the clip) and pre-resized by the decoder; the processor must not
resample them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging

import torch

from extract.decode import MediaSpec
from extract.heads import Clip, Head, Result, checkpoint_error, register

log = logging.getLogger(__name__)

TIME_INSTRUCTION = ("The video lasts for {duration:.2f} seconds, and {count} frames are uniformly sampled from it. "
                    "These frames are located at {times}.Please answer the following questions related to this video.")


def pick_attention(requested: str) -> str:
    """flash_attention_2 only when the flash-attn package is installed: never a kernel download at run time."""
    if requested != "auto":
        return requested
    return "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"


def sequence_confidence(token_logprobs: torch.Tensor) -> tuple[float, float]:
    """(geometric-mean token probability in [0, 1], mean log-probability) of one caption."""
    if token_logprobs.numel() == 0:
        return 0.0, float("-inf")
    mean = float(token_logprobs.float().mean())
    return float(torch.tensor(mean).exp()), mean


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
        from transformers import AutoProcessor, LlavaOnevisionForConditionalGeneration

        dtype = {"auto": torch.bfloat16 if device.type == "cuda" else torch.float32, "bfloat16": torch.bfloat16,
                 "float16": torch.float16, "float32": torch.float32}[self.dtype_name]
        try:
            self.processor = AutoProcessor.from_pretrained(self.model_id, revision=self.revision)
            self.model = LlavaOnevisionForConditionalGeneration.from_pretrained(
                self.model_id, revision=self.revision, dtype=dtype,
                attn_implementation=pick_attention(self.attn_implementation)).to(device).eval()
        except (OSError, ValueError) as exc:
            raise checkpoint_error(self.model_id, exc) from exc
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
        try:
            return self._generate(clips)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if len(clips) == 1:
                raise
            half = len(clips) // 2
            log.warning("out of GPU memory on %d clips; retrying in halves", len(clips))
            return self.infer(clips[:half]) + self.infer(clips[half:])

    def _generate(self, clips: list[Clip]) -> list[Result]:
        prompts = [self.prompt_for(clip) for clip in clips]
        videos = [torch.from_numpy(clip.media.frames) for clip in clips]  # [T, H, W, 3] uint8
        inputs = self.processor(text=prompts, videos=videos, return_tensors="pt", padding=True, do_sample_frames=False)
        inputs = inputs.to(self.device)
        inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(self.model.dtype)
        output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                     output_scores=True, return_dict_in_generate=True)
        logprobs = self.model.compute_transition_scores(output.sequences, output.scores, normalize_logits=True)
        generated = output.sequences[:, inputs["input_ids"].shape[1]:]
        eos_ids = set(self._eos_ids())
        results = []
        for clip, tokens, token_logprobs in zip(clips, generated.tolist(), logprobs):
            ended = next((i for i, t in enumerate(tokens) if t in eos_ids), None)
            length = len(tokens) if ended is None else ended
            confidence, mean_logprob = sequence_confidence(token_logprobs[:length])
            results.append(Result(fields={
                "caption": self.processor.tokenizer.decode(tokens[:length], skip_special_tokens=True).strip(),
                "confidence": round(confidence, 6), "mean_logprob": round(mean_logprob, 6), "num_tokens": length,
                "finish_reason": "eos" if ended is not None else "length", "num_frames": len(clip.media.frame_times),
                "frame_times": clip.media.frame_times, "revision": self.revision or getattr(self.model.config, "_commit_hash", None),
                "prompt_sha1": self.prompt_hash,
            }))
        return results

    def _eos_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        return eos if isinstance(eos, list) else [eos]
