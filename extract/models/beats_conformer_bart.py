"""BEATs-Conformer-BART, the DCASE 2023 task 6A audio captioner (Wu et al., ICASSP 2024), for inference.

Written for this project from the released model's description
(slSeanWU/beats-conformer-bart-audio-captioner); no package ships it. The path from sound to text:

  16 kHz mono in [-1, 1] -> x 2^15 -> Kaldi fbank (128 mel bins, 25 ms / 10 ms, povey window)
  -> (fbank - 15.41663) / (2 * 6.55582)                          BEATs' normalisation
  -> BEATs: 16x16 patches, convolutional position encoding, gated relative-position attention with
     deep norm; the output of layer 10 (`repr_layer`), the layer the released model reads
  -> Conv1d(kernel 4, stride 3) downsampling -> transformers' Wav2Vec2ConformerEncoder (2 layers)
  -> + learned cross-attention positions -> transformers' BART decoder and LM head, beam search.

The released weights (`pytorch_model.bin`) load through `load_released`, strictly: every tensor
in the file lands in a parameter and every parameter is filled. Layers 11-12 of BEATs, its
AudioSet classifier and the text-embedding predictor are loaded with the rest but never run.

Batches are exact: each clip's fbank is computed unpadded, and padding is masked at the patch
level and again before the Conformer's depthwise convolution (transformers' module would otherwise
mix padded positions into the last valid ones), so a clip gets the same caption alone or in a batch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16000
FBANK_MEAN, FBANK_STD = 15.41663, 6.55582
WINDOW_SAMPLES, HOP_SAMPLES, FFT_SIZE = 400, 160, 512  # 25 ms, 10 ms, next power of two

# BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt1, the encoder the released captioner was trained on
BEATS_CONFIG = {"input_patch_size": 16, "embed_dim": 512, "encoder_layers": 12, "encoder_embed_dim": 768,
                "encoder_ffn_embed_dim": 3072, "encoder_attention_heads": 12, "conv_pos": 128, "conv_pos_groups": 16,
                "num_buckets": 320, "max_distance": 800, "predictor_class": 527, "num_mel_bins": 128}
# config/conformer_config.json of the release: the fields the encoder uses
CONFORMER_CONFIG = {"hidden_size": 768, "num_hidden_layers": 2, "num_attention_heads": 12, "intermediate_size": 1536,
                    "hidden_act": "swish", "conv_depthwise_kernel_size": 31, "position_embeddings_type": "relative",
                    "max_source_positions": 1536, "layer_norm_eps": 1e-5, "num_conv_pos_embeddings": 128,
                    "num_conv_pos_embedding_groups": 16}
# config/beam_search.json of the release
BEAM_SEARCH = {"num_beams": 4, "early_stopping": True, "min_length": 5, "max_length": 100, "length_penalty": 1.0,
               "no_repeat_ngram_size": 3, "decoder_start_token_id": 2, "bos_token_id": 2, "eos_token_id": 2}
RELEASED_DEFAULTS = {"repr_layer": 10, "downsample_rate": 3, "downsample_kernel": 4, "max_cross_positions": 512,
                     "embed_predictor_ffn_dim": 3072, "embed_predictor_out_dim": 768}


# ---------------------------------------------------------------------------- front end
def _mel(freq):
    return 1127.0 * torch.log1p(freq / 700.0)


def kaldi_mel_banks(num_bins: int, device=None) -> torch.Tensor:
    """Kaldi's triangular mel filters, [num_bins, FFT_SIZE // 2 + 1] (20 Hz to Nyquist, equal mel spacing)."""
    low, high = _mel(torch.tensor(20.0, dtype=torch.float64)), _mel(torch.tensor(SAMPLE_RATE / 2, dtype=torch.float64))
    step = (high - low) / (num_bins + 1)
    left = low + step * torch.arange(num_bins, dtype=torch.float64)[:, None]
    mel = _mel(torch.arange(FFT_SIZE // 2, dtype=torch.float64) * SAMPLE_RATE / FFT_SIZE)[None, :]
    rising, falling = (mel - left) / step, (left + 2 * step - mel) / step
    banks = torch.clamp(torch.minimum(rising, falling), min=0)
    return F.pad(banks, (0, 1)).float().to(device)  # Kaldi leaves the Nyquist bin out


def kaldi_fbank(waveform: torch.Tensor, num_bins: int = 128) -> torch.Tensor:
    """Log mel filterbank of one 16 kHz signal scaled to int16 range, as `torchaudio.compliance.kaldi.fbank`
    computes it with BEATs' settings (no dither, DC removal, pre-emphasis 0.97, povey window, power
    spectrum, snip_edges). [frames, num_bins]; frames = 1 + (samples - 400) // 160."""
    waveform = waveform.float()
    if waveform.numel() < WINDOW_SAMPLES:
        return waveform.new_zeros(0, num_bins)
    frames = waveform.unfold(0, WINDOW_SAMPLES, HOP_SAMPLES)
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)  # the first sample is its own predecessor
    frames = frames - 0.97 * previous
    window = torch.hann_window(WINDOW_SAMPLES, periodic=False, device=frames.device).pow(0.85)
    power = torch.fft.rfft(frames * window, n=FFT_SIZE).abs().pow(2)
    energies = power @ kaldi_mel_banks(num_bins, frames.device).T
    return torch.log(torch.clamp(energies, min=torch.finfo(torch.float32).eps))


def normalised_fbank(audio: torch.Tensor, num_bins: int = 128) -> torch.Tensor:
    """BEATs' input for one clip: fbank of the signal in int16 range, normalised with BEATs' statistics."""
    with torch.autocast(audio.device.type, enabled=False):  # a caller's bf16 autocast would round the mel energies
        return (kaldi_fbank(audio.float() * 2**15, num_bins) - FBANK_MEAN) / (2 * FBANK_STD)


# ---------------------------------------------------------------------------- BEATs
def relative_position_buckets(length: int, num_buckets: int, max_distance: int, device=None) -> torch.Tensor:
    """T5-style bidirectional buckets of (key - query): exact for small distances, logarithmic up to max_distance."""
    position = torch.arange(length, device=device)
    relative = position[None, :] - position[:, None]
    half = num_buckets // 2
    exact = half // 2
    distance = relative.abs()
    far = exact + (torch.log(distance.clamp(min=1).float() / exact) / math.log(max_distance / exact)
                   * (half - exact)).long()
    return (relative > 0).long() * half + torch.where(distance < exact, distance, far.clamp(max=half - 1))


class GatedRelativeAttention(nn.Module):
    """Multi-head self-attention with a relative-position bias scaled per query by a learned gate (BEATs/WavLM)."""

    def __init__(self, dim: int, heads: int, num_buckets: int = 0):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))
        self.grep_linear = nn.Linear(dim // heads, 8)
        self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))
        # only the first layer owns the bucket table; the others share its bias
        self.relative_attention_bias = nn.Embedding(num_buckets, heads) if num_buckets else None

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = (proj(x).view(batch, length, self.heads, -1).transpose(1, 2) for proj in (self.q_proj, self.k_proj, self.v_proj))
        gate_a, gate_b = torch.sigmoid(self.grep_linear(q).view(batch, self.heads, length, 2, 4).sum(-1)).chunk(2, dim=-1)
        bias = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * position_bias  # [B, H, T, T]
        if padding is not None:
            bias = bias.masked_fill(padding[:, None, None, :], float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))


class BeatsLayer(nn.Module):
    """Post-norm transformer layer with deep norm (residual scaled by (2 * layers) ** 0.25)."""

    def __init__(self, dim: int, ffn_dim: int, heads: int, num_buckets: int, total_layers: int):
        super().__init__()
        self.self_attn = GatedRelativeAttention(dim, heads, num_buckets)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, ffn_dim), nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.residual_scale = (2 * total_layers) ** 0.25

    def forward(self, x, position_bias, padding):
        x = self.self_attn_layer_norm(x * self.residual_scale + self.self_attn(x, position_bias, padding))
        return self.final_layer_norm(x * self.residual_scale + self.fc2(F.gelu(self.fc1(x))))


class BeatsTransformer(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        dim = cfg["encoder_embed_dim"]
        self.num_buckets, self.max_distance = cfg["num_buckets"], cfg["max_distance"]
        # weight-normalised in training; the released g and v are folded into one weight when loading
        self.pos_conv = nn.Conv1d(dim, dim, cfg["conv_pos"], padding=cfg["conv_pos"] // 2, groups=cfg["conv_pos_groups"])
        self.trim = 1 if cfg["conv_pos"] % 2 == 0 else 0
        self.layer_norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(
            BeatsLayer(dim, cfg["encoder_ffn_embed_dim"], cfg["encoder_attention_heads"], cfg["num_buckets"] if i == 0 else 0,
                       cfg["encoder_layers"]) for i in range(cfg["encoder_layers"]))

    def forward(self, x: torch.Tensor, padding: torch.Tensor, num_layers: int) -> torch.Tensor:
        x = x.masked_fill(padding[..., None], 0.0)
        position = self.pos_conv(x.transpose(1, 2))
        x = self.layer_norm(x + F.gelu(position[..., : position.shape[-1] - self.trim]).transpose(1, 2))
        buckets = relative_position_buckets(x.shape[1], self.num_buckets, self.max_distance, x.device)
        position_bias = self.layers[0].self_attn.relative_attention_bias(buckets).permute(2, 0, 1).to(x.dtype)
        for layer in self.layers[:num_layers]:
            x = layer(x, position_bias, padding)
        return x


class Beats(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.patch = cfg["input_patch_size"]
        self.patch_embedding = nn.Conv2d(1, cfg["embed_dim"], self.patch, stride=self.patch, bias=False)
        self.layer_norm = nn.LayerNorm(cfg["embed_dim"])
        self.post_extract_proj = nn.Linear(cfg["embed_dim"], cfg["encoder_embed_dim"])
        self.encoder = BeatsTransformer(cfg)
        self.predictor = nn.Linear(cfg["encoder_embed_dim"], cfg["predictor_class"])  # AudioSet head, unused here
        self.patches_per_step = cfg["num_mel_bins"] // self.patch

    def forward(self, fbank: torch.Tensor, frames: torch.Tensor, num_layers: int) -> tuple[torch.Tensor, torch.Tensor]:
        """fbank [B, F, mel] padded at the end; frames [B] valid frames each -> (tokens [B, T, C], padding [B, T])."""
        x = self.patch_embedding(fbank.unsqueeze(1))  # [B, C, F / 16, mel / 16]: tokens run time-major
        x = self.post_extract_proj(self.layer_norm(x.flatten(2).transpose(1, 2)))
        valid = (frames // self.patch) * self.patches_per_step
        padding = torch.arange(x.shape[1], device=x.device)[None, :] >= valid[:, None]
        return self.encoder(x, padding, num_layers), padding


# ---------------------------------------------------------------------------- captioner
class TextEmbeddingPredictor(nn.Module):
    """Trained to predict a sentence embedding of the caption from the pooled encoder output; loaded, not run."""

    def __init__(self, dim: int, ffn_dim: int, out_dim: int):
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(dim, ffn_dim, bias=False), nn.BatchNorm1d(ffn_dim), nn.Linear(ffn_dim, out_dim, bias=False)


@dataclass
class Encoded:
    """What the decoder attends to, plus the pooled BEATs features of each row."""

    hidden: torch.Tensor  # [B, T, d_model], cross-attention positions added
    mask: torch.Tensor  # [B, T], 1 where valid
    pooled_beats: torch.Tensor  # [B, C], mean of the representation layer over valid tokens
    beats_tokens: torch.Tensor  # [B], how many valid tokens each row's pooled features average


class BeatsConformerBart(nn.Module):
    def __init__(self, bart_config, beats_config: dict | None = None, conformer_config: dict | None = None,
                 **released):
        from transformers import BartForConditionalGeneration, Wav2Vec2ConformerConfig
        from transformers.models.bart.modeling_bart import BartLearnedPositionalEmbedding
        from transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer import Wav2Vec2ConformerEncoder

        super().__init__()
        options = {**RELEASED_DEFAULTS, **released}
        self.repr_layer = options["repr_layer"]
        self.encoder = Beats({**BEATS_CONFIG, **(beats_config or {})})
        conformer = Wav2Vec2ConformerConfig(**{**CONFORMER_CONFIG, **(conformer_config or {})})
        conformer._attn_implementation = "eager"  # its relative-position attention has no other implementation
        width = conformer.hidden_size
        if width != bart_config.d_model:
            raise ValueError(f"the Conformer's width {width} differs from the decoder's {bart_config.d_model}")
        self.downsample_conv = nn.Conv1d(width, width, options["downsample_kernel"], stride=options["downsample_rate"])
        self.postencoder = Wav2Vec2ConformerEncoder(conformer)
        self.cross_embed_positions = BartLearnedPositionalEmbedding(options["max_cross_positions"], bart_config.d_model)
        self.encoder_embed_mlp = TextEmbeddingPredictor(bart_config.d_model, options["embed_predictor_ffn_dim"],
                                                         options["embed_predictor_out_dim"])
        # the released decoder is BART's: run it as transformers' BartForConditionalGeneration, whose own
        # text encoder is never used (the audio encoder's output is passed in), so it is built empty and dropped
        self.bart = BartForConditionalGeneration(bart_config.__class__(**{**bart_config.to_dict(), "encoder_layers": 0}))
        self.bart.model.encoder = None
        self._conformer_valid = None
        for layer in self.postencoder.layers:
            layer.conv_module.depthwise_conv.register_forward_pre_hook(self._mask_padding)

    def _mask_padding(self, module, args):
        # positions past a row's end read as zeros, as the convolution's own padding does for an unpadded clip
        if self._conformer_valid is not None:
            return (args[0] * self._conformer_valid[:, None, :].to(args[0].dtype),)
        return None

    @property
    def max_cross_positions(self) -> int:
        return self.cross_embed_positions.num_embeddings - self.cross_embed_positions.offset

    def encode(self, fbank: torch.Tensor, frames: torch.Tensor) -> Encoded:
        tokens, padding = self.encoder(fbank, frames, self.repr_layer)
        valid_tokens = (~padding).sum(dim=1)
        pooled = (tokens * (~padding)[..., None]).sum(dim=1) / valid_tokens[:, None].clamp(min=1)
        kernel, stride = self.downsample_conv.kernel_size[0], self.downsample_conv.stride[0]
        hidden = self.downsample_conv(tokens.transpose(1, 2)).transpose(1, 2)
        valid = torch.div(valid_tokens - kernel, stride, rounding_mode="floor") + 1  # outputs that see no padding
        mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < valid[:, None]
        self._conformer_valid = mask
        try:
            hidden = self.postencoder(hidden, attention_mask=mask).last_hidden_state
        finally:
            self._conformer_valid = None
        hidden = hidden + self.cross_embed_positions(hidden)
        return Encoded(hidden, mask.long(), pooled, valid_tokens)


# ---------------------------------------------------------------------------- released checkpoint
class CheckpointMismatch(ValueError):
    """The file's tensors do not fit the architecture (keys missing, left over or of the wrong shape)."""


def _folded_weight_norm(g: torch.Tensor, v: torch.Tensor, dim: int) -> torch.Tensor:
    other = tuple(d for d in range(v.dim()) if d != dim)
    return v * (g / v.norm(dim=other, keepdim=True))


def map_released_keys(state: dict[str, torch.Tensor], model: BeatsConformerBart) -> dict[str, torch.Tensor]:
    """The released checkpoint's state dict under this module's names. Raises CheckpointMismatch
    when a tensor is left over or one is missing."""
    state = dict(state)
    out: dict[str, torch.Tensor] = {}

    def take(key):
        if key not in state:
            raise CheckpointMismatch(f"the checkpoint has no {key!r}")
        return state.pop(key)

    # BART's token embedding is shared with the LM head (tied in the release, so saved twice or once)
    embed = take("decoder.embed_tokens.weight")
    head = state.pop("lm_head.weight", None)
    if head is not None and not torch.equal(head, embed):
        raise CheckpointMismatch("lm_head.weight differs from decoder.embed_tokens.weight; the released model ties them")
    for name in ("bart.model.shared.weight", "bart.model.decoder.embed_tokens.weight", "bart.lm_head.weight"):
        out[name] = embed
    out["bart.final_logits_bias"] = take("final_logits_bias")

    # weight norm of BEATs' position convolution, folded
    prefix = "encoder.encoder.pos_conv"
    out[f"{prefix}.weight"] = _folded_weight_norm(take(f"{prefix}.0.weight_g"), take(f"{prefix}.0.weight_v"), dim=2)
    out[f"{prefix}.bias"] = take(f"{prefix}.0.bias")

    # the relative-position table is layer 0's, shared by every layer (saved under each layer's name)
    table = "encoder.encoder.layers.{}.self_attn.relative_attention_bias.weight"
    shared = take(table.format(0))
    out[table.format(0)] = shared
    for i in range(1, len(model.encoder.encoder.layers)):
        copy = state.pop(table.format(i), None)
        if copy is not None and not torch.equal(copy, shared):
            raise CheckpointMismatch(f"{table.format(i)} differs from layer 0's; the released model shares it")

    # the Conformer's position convolution: old weight-norm names onto the parametrization's
    ours = dict(model.named_parameters())
    for old, new in (("weight_g", "original0"), ("weight_v", "original1")):
        key = f"postencoder.pos_conv_embed.conv.{old}"
        if key in state and f"postencoder.pos_conv_embed.conv.parametrizations.weight.{new}" in ours:
            out[f"postencoder.pos_conv_embed.conv.parametrizations.weight.{new}"] = state.pop(key)

    for key in list(state):
        if key.startswith("decoder."):
            out["bart.model." + key] = state.pop(key)
    out.update(state)  # the rest keep their names
    return out


def load_state(model: BeatsConformerBart, state: dict[str, torch.Tensor]) -> None:
    mapped = map_released_keys(state, model)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    wrong = sorted(k for k in set(expected) & set(mapped) if expected[k].shape != mapped[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''} ({len(keys)})"
                 for label, keys in (("missing", missing), ("left over", unexpected), ("wrong shape", wrong)) if keys]
        raise CheckpointMismatch("; ".join(parts))
    model.load_state_dict(mapped, strict=True)


def read_bart_config(folder: Path):
    """The decoder's BartConfig from the release's config.json; `beats_config`/`conformer_config`
    entries there (written by tests for tiny models) override the released encoder's sizes."""
    from transformers import BartConfig

    raw = json.loads((folder / "config.json").read_text())
    extra = {key: raw.pop(key) for key in ("beats_config", "conformer_config") if key in raw}
    released = {"repr_layer": raw.get("encoder_repr_layer_idx", RELEASED_DEFAULTS["repr_layer"]),
                "downsample_rate": raw.get("encoder_downsample_rate", RELEASED_DEFAULTS["downsample_rate"]),
                "downsample_kernel": int(round(raw.get("encoder_downsample_rate", 3) * raw.get("downsample_kernel_size", 1.5))),
                "max_cross_positions": raw.get("max_cross_position_embeddings", RELEASED_DEFAULTS["max_cross_positions"]),
                "embed_predictor_ffn_dim": raw.get("embed_predictor_ffn_dim", RELEASED_DEFAULTS["embed_predictor_ffn_dim"]),
                "embed_predictor_out_dim": raw.get("embed_predictor_out_dim", RELEASED_DEFAULTS["embed_predictor_out_dim"])}
    return BartConfig(**raw), extra, released


def load_released(folder: str | Path) -> BeatsConformerBart:
    """Build the captioner from a folder holding the release's config.json and pytorch_model.bin."""
    folder = Path(folder)
    config, extra, released = read_bart_config(folder)
    model = BeatsConformerBart(config, **extra, **released)
    state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    load_state(model, state)
    return model.eval()
