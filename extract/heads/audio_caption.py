"""audio_caption: BEATs-Conformer-BART captions of a clip's sound, and its pooled BEATs features.

The model saw clips of up to 30 s in training (Clotho), so longer audio is cut into equal windows
of at most `window_s` (a 70 s clip gives three of 23.3 s) and each window is captioned. The clip's
`caption` is its most confident window's; every window's caption is in `windows`. Decoding is the
release's beam search (4 beams, no repeated trigram, 5 to 100 tokens). Windows of all the clips in
a batch are encoded and decoded together, `window_batch` at a time.
"""

from __future__ import annotations

import math
import string
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch

from extract.decode import MediaSpec
from extract.errors import ConfigError
from extract.heads import (Clip, Head, Result, checkpoint_error, local_checkpoint, register, resolve_dtype, split_on_oom,
                           with_preset)
from extract.models.beats_conformer_bart import BEAM_SEARCH, SAMPLE_RATE, CheckpointMismatch, load_released, normalised_fbank
from extract.models.generation import summarise

CHECKPOINT_FILES = ("config.json", "pytorch_model.bin")
PRESETS = {
    "authors": {"dtype": "float32"},  # the release runs in float32 (inference_beam_search.py)
    # bfloat16 weights and activations on CUDA (float32 on a CPU): 1.45x the clips/s at 64 windows on an H100 (measured
    # with random weights); the beam search may then pick other words where two captions score alike
    "fast": {"dtype": "bfloat16"},
}
NO_PUNCTUATION = str.maketrans("", "", string.punctuation)  # the release's captions carry none (DCASE's convention)
MIN_SAMPLES = 400 + 15 * 160  # one 16-frame patch column: the shortest audio the encoder can take (0.175 s)


def fetch_checkpoint(checkpoint: str, revision: str | None) -> Path:
    """A local folder as is; a hub id as its snapshot in the Hugging Face cache (never downloaded at run time)."""
    return Path(local_checkpoint(checkpoint, revision, option="model.audio_caption.checkpoint", fetch=FETCH))


FETCH = ("Fetch it first with `hf download slseanwu/beats-conformer-bart-audio-captioner config.json pytorch_model.bin` and "
         "`hf download facebook/bart-base` (its tokenizer), or point model.audio_caption.checkpoint at a folder holding "
         "config.json and pytorch_model.bin")


def clean_caption(text: str) -> str:
    """The caption as the release's inference_beam_search.py writes it: punctuation removed (DCASE's convention)."""
    return text.translate(NO_PUNCTUATION).strip()


def windows_of(samples: int, window_s: float) -> list[tuple[int, int]]:
    """[start, end) sample ranges: the fewest equal windows no longer than window_s."""
    count = max(1, math.ceil(samples / (window_s * SAMPLE_RATE)))
    bounds = [round(i * samples / count) for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


class Window(TypedDict):
    start: float  # seconds into the clip's audio
    end: float
    caption: str
    confidence: float
    mean_logprob: float
    num_tokens: int
    finish_reason: str


@register
class AudioCaption(Head):
    name = "audio_caption"
    requires = ("transformers", "resampy")
    fields = {"caption": str, "confidence": float, "mean_logprob": float, "num_tokens": int, "finish_reason": str,
              "has_audio": bool, "audio_s": float, "num_windows": int, "windows": list[Window], "feature_dim": int,
              "feature_layer": int, "tokenizer": str, "preset": str, "revision": str}
    arrays = {"features": ("float16", 1)}
    frames_in_model_step = False

    def __init__(self, checkpoint: str, tokenizer: str = "facebook/bart-base", revision: str | None = None,
                 preset: str = "authors", window_s: float = 30.0, window_batch: int = 16,
                 num_beams: int = BEAM_SEARCH["num_beams"], max_length: int = BEAM_SEARCH["max_length"], dtype: str | None = None):
        options = with_preset(self.name, PRESETS, preset, {"dtype": dtype})
        self.model_id, self.tokenizer_id, self.revision, self.preset = checkpoint, tokenizer, revision, preset
        self.window_s, self.window_batch, self.dtype_name = window_s, window_batch, options["dtype"]
        self.beam_search = {**BEAM_SEARCH, "num_beams": num_beams, "max_length": max_length}
        # librosa.load(sr=16000) as the release's pinned librosa 0.9.2 does it (data/clotho_captioning_dataset.py)
        self.media_spec = MediaSpec(audio=True, sample_rate=SAMPLE_RATE, audio_resampler="librosa")
        self.fbank_device: torch.device | None = None

    def open(self, device: torch.device) -> None:
        self.fbank_device = device if device.type == "cpu" else None  # CPU work belongs in the workers; a GPU does it in the model step
        self._files()  # a missing checkpoint or tokenizer is one line before any work

    def _files(self) -> tuple[Path, str]:
        """The checkpoint's folder with the files the loader reads, and the tokenizer's folder."""
        folder = fetch_checkpoint(self.model_id, self.revision)
        missing = [name for name in CHECKPOINT_FILES if not (folder / name).is_file()]
        if missing:
            raise checkpoint_error(self.model_id, FileNotFoundError(f"{', '.join(missing)} not in {folder}"), fetch=FETCH)
        return folder, local_checkpoint(self.tokenizer_id, option="model.audio_caption.tokenizer")

    def load(self, device: torch.device) -> None:
        from transformers import AutoTokenizer

        folder, tokenizer = self._files()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        except (OSError, ValueError) as exc:
            raise checkpoint_error(self.tokenizer_id, exc, option="model.audio_caption.tokenizer") from exc
        try:
            model = load_released(folder)
        except CheckpointMismatch as exc:
            raise ConfigError(f"{self.model_id} is not a BEATs-Conformer-BART checkpoint this head can load: {exc}") from exc
        self.model = model.to(device=device, dtype=resolve_dtype(self.dtype_name, device)).eval()
        if self.window_s * SAMPLE_RATE > self._longest_window_samples():
            raise ConfigError(f"window_s={self.window_s:g} is longer than the model's {self._longest_window_samples() / SAMPLE_RATE:.1f} s "
                              "cross-attention positions")
        self.device = device

    def _longest_window_samples(self) -> int:
        """Audio whose downsampled encoding still fits the decoder's learned cross-attention positions."""
        positions = self.model.max_cross_positions
        conv = self.model.downsample_conv
        tokens = (positions - 1) * conv.stride[0] + conv.kernel_size[0]
        per_column = self.model.encoder.patches_per_step
        frames = (tokens // per_column) * self.model.encoder.patch + self.model.encoder.patch - 1
        return 400 + (frames - 1) * 160

    def prepare(self, clip: Clip) -> Result | dict:
        """In a worker: a skip when there is nothing to caption, else the windows (and their fbanks on a CPU run)."""
        skipped = self._skipped(clip.media)
        if skipped is not None:
            return skipped
        audio = torch.as_tensor(clip.media.audio)
        windows = [{"start": start / SAMPLE_RATE, "end": end / SAMPLE_RATE, "audio": audio[start:end]}
                   for start, end in windows_of(len(audio), self.window_s)]
        if self.fbank_device is not None:
            for window in windows:
                window["fbank"] = normalised_fbank(window["audio"].to(self.fbank_device))
        return {"windows": windows, "audio_s": round(len(audio) / SAMPLE_RATE, 3)}

    def infer(self, clips: list[Clip]) -> list[Result]:
        prepared = [clip.prepared if clip.prepared is not None else self.prepare(clip) for clip in clips]
        windows = [(index, window) for index, p in enumerate(prepared) if isinstance(p, dict) for window in p["windows"]]
        outputs = []
        for first in range(0, len(windows), self.window_batch):
            outputs += split_on_oom(self._caption_windows, [w for _, w in windows[first : first + self.window_batch]])
        results = []
        for index, p in enumerate(prepared):
            if isinstance(p, Result):
                results.append(p)
            else:
                results.append(self._clip_result(p, [(w, out) for (i, w), out in zip(windows, outputs) if i == index]))
        return results

    @staticmethod
    def _skipped(media) -> Result | None:
        """The reason a clip has nothing to caption, as a skipped (or error) result; None when it has."""
        if media.audio_error:
            return Result(fields={"has_audio": True, "num_windows": 0}, status="error", error_type=media.audio_error[0],
                          error=media.audio_error[1])
        if not media.has_audio or media.audio is None:
            return Result(fields={"has_audio": False, "num_windows": 0}, status="skipped", error_type="no_audio",
                          error="the clip has no audio stream")
        seconds = len(media.audio) / SAMPLE_RATE
        if len(media.audio) < MIN_SAMPLES:
            return Result(fields={"has_audio": True, "num_windows": 0, "audio_s": round(seconds, 3)}, status="skipped",
                          error_type="too_short", error=f"{seconds:.3f} s of audio; captioning needs at least {MIN_SAMPLES / SAMPLE_RATE:.3f} s")
        return None

    def _clip_result(self, prepared: dict, windows: list) -> Result:
        entries = [{"start": round(w["start"], 3), "end": round(w["end"], 3), "caption": out["generated"].text, **out["generated"].fields()}
                   for w, out in windows]
        best = max(range(len(entries)), key=lambda i: entries[i]["confidence"])
        weights = np.array([out["tokens"] for _, out in windows], dtype=np.float64)
        pooled = (np.stack([out["pooled"] for _, out in windows]) * weights[:, None]).sum(0) / weights.sum()
        fields = {key: entries[best][key] for key in ("caption", "confidence", "mean_logprob", "num_tokens", "finish_reason")}
        fields |= {"has_audio": True, "audio_s": prepared["audio_s"], "num_windows": len(entries),
                   "windows": entries, "feature_dim": int(pooled.shape[0]), "feature_layer": self.model.repr_layer,
                   "tokenizer": self.tokenizer_id, "preset": self.preset, "revision": self.revision}
        return Result(fields=fields, arrays={"features": pooled.astype(np.float16)})

    @torch.no_grad()
    def _caption_windows(self, windows: list[dict]) -> list[dict]:
        from transformers.modeling_outputs import BaseModelOutput

        fbanks = [(w["fbank"] if "fbank" in w else normalised_fbank(w["audio"].to(self.device))).to(self.device) for w in windows]
        frames = torch.tensor([len(f) for f in fbanks], device=self.device)
        batch = torch.nn.utils.rnn.pad_sequence(fbanks, batch_first=True).to(self.model.bart.dtype)
        encoded = self.model.encode(batch, frames)
        # generate expands its encoder_outputs to the beams in place: each call gets its own
        sequences = self.model.bart.generate(encoder_outputs=BaseModelOutput(last_hidden_state=encoded.hidden),
                                             attention_mask=encoded.mask, **self.beam_search)
        # the caption's own token probabilities, read back in one teacher-forced pass
        logits = self.model.bart(encoder_outputs=BaseModelOutput(last_hidden_state=encoded.hidden), attention_mask=encoded.mask,
                                 decoder_input_ids=sequences[:, :-1]).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, sequences[:, 1:, None])[..., 0].cpu()
        pooled, tokens = encoded.pooled_beats.float().cpu().numpy(), encoded.beats_tokens.tolist()
        eos_ids = {self.beam_search["eos_token_id"]}
        results = []
        for row, sequence in enumerate(sequences[:, 1:].tolist()):
            generated = summarise(self.tokenizer, sequence, logprobs[row], eos_ids)
            generated.text = clean_caption(generated.text)
            if generated.num_tokens + 2 >= self.beam_search["max_length"]:
                generated.finish_reason = "length"  # BART forces an end token at max_length; the caption was cut
            results.append({"generated": generated, "pooled": pooled[row], "tokens": tokens[row]})
        return results
