"""Synchformer (Iashin, Xie, Rahtu, Zisserman, ICASSP 2024) for inference, written from the authors' code.

v-iashin/Synchformer (`model/sync_model.py`, `model/modules/feat_extractors/visual/motionformer.py`,
`.../audio/ast.py`, `configs/sync.yaml`, `dataset/transforms.py`) and the copy that computes the DeSync
metric, hkchengrex/av-benchmark (`av_bench/synchformer/`, `av_bench/extract.py`, `av_bench/evaluate.py`).

- Picture: 25 fps, short side 256 then the centre 224 x 224, [0, 1] in half precision then (x - 0.5) / 0.5;
  segments of 16 frames every 8 frames. MotionFormer (ViT-B/16 with 2 x 16 x 16 tubelets, divided
  space-time attention) per segment, then a transformer layer with its own CLS token pools each of the 8
  tubelet steps over space: 8 tokens per segment.
- Sound: 16 kHz, segments of 10240 samples (16 frames' worth) every 5120; a 128-band mel spectrogram
  (25 ms Hann window, 10 ms hop, 1024-point FFT, power), log(x + 1e-6), padded to 66 frames, normalised
  as AST was: (x + 4.27) / (2 x 4.57). AST (12 x 6 patches of 16 x 16, stride 10) per segment, then a
  layer pools each time step over frequency: 6 tokens per segment.
- 14 segments of each make one window (4.8 s); the synchronisation transformer reads
  [OFF, 112 picture tokens, MOD, 84 sound tokens] and classifies OFF over 21 offsets, -2 to +2 s.

The modules carry the names of the released state dict (MMAudio's `synchformer_state_dict.pth`, the
`24-01-04T16-39-21` model trained on AudioSet), so loading maps each tensor to itself, strictly.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

CHECKPOINT_URL = "https://github.com/hkchengrex/MMAudio/releases/download/v0.1/synchformer_state_dict.pth"
OFFSETS_S = np.linspace(-2.0, 2.0, 21)  # the class grid: audio taken this much later than the picture
FPS, SAMPLE_RATE = 25, 16000
SHORT_SIDE, CROP = 256, 224
SEGMENT_FRAMES, SEGMENT_STEP, SEGMENTS_PER_WINDOW = 16, 8, 14
WINDOW_S = ((SEGMENTS_PER_WINDOW - 1) * SEGMENT_STEP + SEGMENT_FRAMES) / FPS  # 4.8
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
SEGMENT_SAMPLES, SEGMENT_SAMPLE_STEP = SEGMENT_FRAMES * SAMPLES_PER_FRAME, SEGMENT_STEP * SAMPLES_PER_FRAME
N_MELS, SPEC_FRAMES = 128, 66
AST_MEAN, AST_STD = -4.2677393, 4.5689974
PATCH, TUBELET = 16, 2
AST_PATCH, AST_STRIDE = 16, 10
HEADS_VIDEO, HEADS_AUDIO, HEADS_SYNC = 12, 12, 8


# ---------------------------------------------------------------------------- the sound's input


def _mel_filters(n_freqs: int = 513, n_mels: int = N_MELS, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Triangular filters on the HTK mel scale from 0 Hz to Nyquist, unnormalised: torchaudio's
    `MelSpectrogram` defaults, which the authors use. [n_freqs, n_mels]"""
    def to_mel(hz):
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    freqs = np.linspace(0, sample_rate // 2, n_freqs)
    edges = 700.0 * (10 ** (np.linspace(to_mel(0.0), to_mel(sample_rate / 2), n_mels + 2) / 2595.0) - 1.0)
    widths = np.diff(edges)
    slopes = edges[None, :] - freqs[:, None]
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    return torch.from_numpy(np.maximum(0.0, np.minimum(rising, falling))).float()


_FILTERS = _mel_filters()


def log_mel(segments: torch.Tensor) -> torch.Tensor:
    """[..., 10240] float32 samples -> [..., 128, 66], the spectrogram AST reads (see the module's doc)."""
    shape = segments.shape[:-1]
    spectrum = torch.stft(segments.reshape(-1, segments.shape[-1]).float(), n_fft=1024, hop_length=160, win_length=400,
                          window=torch.hann_window(400, device=segments.device), center=True, pad_mode="reflect",
                          return_complex=True).abs().pow(2)
    mel = (spectrum.transpose(-1, -2) @ _FILTERS.to(segments.device)).transpose(-1, -2)
    mel = torch.log(mel + 1e-6)
    mel = F.pad(mel, (0, SPEC_FRAMES - mel.shape[-1])) if mel.shape[-1] < SPEC_FRAMES else mel[..., :SPEC_FRAMES]
    return ((mel - AST_MEAN) / (2 * AST_STD)).reshape(*shape, N_MELS, SPEC_FRAMES)


def normalise_frames(frames: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> [..., 3, H, W]: to [0, 1] and (x - 0.5) / 0.5 in half precision, as the authors'
    test transforms do (`RGBToHalfToZeroOne`, `RGBNormalize`), then the model's dtype."""
    return frames.movedim(-1, -3).half().div(255).sub(0.5).div(0.5).to(dtype)


# ---------------------------------------------------------------------------- the picture encoder


class DividedAttention(nn.Module):
    """One MotionFormer attention: the CLS token attends to every token; each other token attends to the CLS
    token and to the tokens of its own tubelet step (space) or its own patch position (time)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, steps: int, over: str) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v)
        patches = (length - 1) // steps

        def grouped(t: torch.Tensor) -> torch.Tensor:  # [B, h, steps*patches, d] -> [B*groups, h, members, d]
            t = t[:, :, 1:].unflatten(2, (steps, patches))
            t = t.permute(0, 3, 1, 2, 4) if over == "time" else t.permute(0, 2, 1, 3, 4)
            return t.flatten(0, 1)

        groups = patches if over == "time" else steps
        cls_k, cls_v = (t[:, :, :1].repeat_interleave(groups, dim=0) for t in (k, v))
        out = F.scaled_dot_product_attention(grouped(q), torch.cat((cls_k, grouped(k)), 2), torch.cat((cls_v, grouped(v)), 2))
        out = out.unflatten(0, (batch, groups))  # [B, groups, h, members, d]
        out = out.permute(0, 2, 3, 1, 4) if over == "time" else out.permute(0, 2, 1, 3, 4)
        out = torch.cat((cls_out, out.flatten(2, 3)), dim=2)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class DividedSpaceTimeBlock(nn.Module):
    """Time attention, then space attention, then the MLP, each pre-normed with a residual."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(dim, eps=1e-6) for _ in range(3))
        self.attn, self.timeattn = DividedAttention(dim, heads), DividedAttention(dim, heads)
        self.mlp = Mlp(dim)

    def forward(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        x = x + self.timeattn(self.norm3(x), steps, "time")
        x = x + self.attn(self.norm1(x), steps, "space")
        return x + self.mlp(self.norm2(x))


class PoolingLayer(nn.TransformerEncoderLayer):
    """A pre-norm transformer layer over [CLS, tokens] whose output is the CLS token (the authors'
    `BaseEncoderLayer`, which pools space, or frequency, per time step)."""

    def __init__(self, dim: int, heads: int):
        super().__init__(d_model=dim, nhead=heads, dim_feedforward=4 * dim, dropout=0.0, activation=nn.GELU(),
                         layer_norm_eps=1e-6, batch_first=True, norm_first=True)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return super().forward(x)[:, 0]


class MotionFormer(nn.Module):
    def __init__(self, dim: int, depth: int):
        super().__init__()
        self.steps, self.patches = SEGMENT_FRAMES // TUBELET, (CROP // PATCH) ** 2
        self.patch_embed = nn.Module()  # the 2D patch embedding: in the checkpoint, unused for video
        self.patch_embed.proj = nn.Conv2d(3, dim, PATCH, PATCH)
        self.patch_embed_3d = nn.Module()
        self.patch_embed_3d.proj = nn.Conv3d(3, dim, (TUBELET, PATCH, PATCH), (TUBELET, PATCH, PATCH))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patches + 1, dim))
        self.temp_embed = nn.Parameter(torch.zeros(1, self.steps, dim))
        self.blocks = nn.ModuleList(DividedSpaceTimeBlock(dim, HEADS_VIDEO) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.spatial_attn_agg = PoolingLayer(dim, HEADS_VIDEO)

    def forward(self, segments: torch.Tensor) -> torch.Tensor:
        """[N, 3, 16, 224, 224] -> [N, 8, D]: one token per tubelet step."""
        x = self.patch_embed_3d.proj(segments).flatten(2).transpose(1, 2)  # (step, row, column) order
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        space_time = self.pos_embed[:, 1:].repeat(1, self.steps, 1) + self.temp_embed.repeat_interleave(self.patches, 1)
        x = x + torch.cat((self.pos_embed[:, :1], space_time), dim=1)
        for block in self.blocks:
            x = block(x, self.steps)
        x = self.norm(x[:, 1:])
        pooled = self.spatial_attn_agg(x.reshape(-1, self.patches, x.shape[-1]))
        return pooled.view(-1, self.steps, x.shape[-1])


# ---------------------------------------------------------------------------- the sound encoder


def _named(**children: nn.Module) -> nn.ModuleDict:
    return nn.ModuleDict(children)


class ASTLayer(nn.Module):
    """A pre-norm ViT layer, named as transformers 4's AST (the names the checkpoint carries)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.attention = _named(attention=_named(query=nn.Linear(dim, dim), key=nn.Linear(dim, dim), value=nn.Linear(dim, dim)),
                                output=_named(dense=nn.Linear(dim, dim)))
        self.intermediate = _named(dense=nn.Linear(dim, 4 * dim))
        self.output = _named(dense=nn.Linear(4 * dim, dim))
        self.layernorm_before = nn.LayerNorm(dim, eps=1e-12)
        self.layernorm_after = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        h = self.layernorm_before(x)
        projections = self.attention["attention"]
        q, k, v = (projections[name](h).view(batch, length, self.heads, -1).transpose(1, 2) for name in ("query", "key", "value"))
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, length, dim)
        x = x + self.attention["output"]["dense"](attended)
        return x + self.output["dense"](F.gelu(self.intermediate["dense"](self.layernorm_after(x))))


class AST(nn.Module):
    def __init__(self, dim: int, depth: int):
        super().__init__()
        self.bands = (N_MELS - AST_PATCH) // AST_STRIDE + 1  # 12
        self.steps = (SPEC_FRAMES - AST_PATCH) // AST_STRIDE + 1  # 6
        embeddings = nn.Module()
        embeddings.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        embeddings.distillation_token = nn.Parameter(torch.zeros(1, 1, dim))
        embeddings.position_embeddings = nn.Parameter(torch.zeros(1, self.bands * self.steps + 2, dim))
        embeddings.patch_embeddings = _named(projection=nn.Conv2d(1, dim, AST_PATCH, AST_STRIDE))
        self.embeddings = embeddings
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(ASTLayer(dim, HEADS_AUDIO) for _ in range(depth))
        self.layernorm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, spectrograms: torch.Tensor) -> torch.Tensor:
        """[N, 128, 66] -> [N, 2 + 72, D] (CLS, distillation, then patches band by band)."""
        e = self.embeddings
        x = e.patch_embeddings["projection"](spectrograms.unsqueeze(1)).flatten(2).transpose(1, 2)
        tokens = (e.cls_token.expand(x.shape[0], -1, -1), e.distillation_token.expand(x.shape[0], -1, -1), x)
        x = torch.cat(tokens, dim=1) + e.position_embeddings
        for layer in self.encoder.layer:
            x = layer(x)
        return self.layernorm(x)


class AudioEncoder(nn.Module):
    def __init__(self, dim: int, depth: int):
        super().__init__()
        self.ast = AST(dim, depth)
        self.freq_attn_agg = PoolingLayer(dim, HEADS_AUDIO)

    def forward(self, spectrograms: torch.Tensor) -> torch.Tensor:
        """[N, 128, 66] -> [N, 6, D]: one token per time step, pooled over frequency."""
        x = self.ast(spectrograms)[:, 2:]
        dim = x.shape[-1]
        x = x.view(-1, self.ast.bands, self.ast.steps, dim).transpose(1, 2).reshape(-1, self.ast.bands, dim)
        return self.freq_attn_agg(x).view(-1, self.ast.steps, dim)


# ---------------------------------------------------------------------------- the synchronisation transformer


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.key, self.query, self.value, self.proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = (layer(x).view(batch, length, self.heads, -1).transpose(1, 2) for layer in (self.query, self.key, self.value))
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, length, dim))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GlobalTransformer(nn.Module):
    def __init__(self, dim: int, depth: int, tokens: int):
        super().__init__()
        self.vis_in_lnorm, self.aud_in_lnorm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.OFF_tok = nn.Parameter(torch.zeros(1, 1, dim))
        self.MOD_tok = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_emb_cfg = nn.Module()  # the authors' name for the positional embedding's holder
        self.pos_emb_cfg.pos_emb = nn.Parameter(torch.zeros(1, tokens, dim))
        self.blocks = nn.Sequential(*(Block(dim, HEADS_SYNC) for _ in range(depth)))
        self.ln_f = nn.LayerNorm(dim)
        self.off_head = nn.Linear(dim, len(OFFSETS_S))

    def forward(self, picture: torch.Tensor, sound: torch.Tensor) -> torch.Tensor:
        batch = picture.shape[0]
        x = torch.cat((self.OFF_tok.expand(batch, -1, -1), self.vis_in_lnorm(picture),
                       self.MOD_tok.expand(batch, -1, -1), self.aud_in_lnorm(sound)), dim=1)
        x = self.ln_f(self.blocks(x + self.pos_emb_cfg.pos_emb))
        return self.off_head(x[:, 0])


class Synchformer(nn.Module):
    def __init__(self, dim: int = 768, video_depth: int = 12, audio_depth: int = 12, sync_depth: int = 3):
        super().__init__()
        self.vfeat_extractor = MotionFormer(dim, video_depth)
        self.afeat_extractor = AudioEncoder(dim, audio_depth)
        self.vproj, self.aproj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        tokens = 2 + SEGMENTS_PER_WINDOW * (self.vfeat_extractor.steps + self.afeat_extractor.ast.steps)  # 198
        self.transformer = GlobalTransformer(dim, sync_depth, tokens)

    def forward(self, segments: torch.Tensor, spectrograms: torch.Tensor) -> torch.Tensor:
        """segments [B, 14, 3, 16, 224, 224] normalised frames, spectrograms [B, 14, 128, 66] -> logits [B, 21]."""
        batch, count = segments.shape[:2]
        picture = self.vproj(self.vfeat_extractor(segments.flatten(0, 1))).reshape(batch, -1, self.vproj.out_features)
        sound = self.aproj(self.afeat_extractor(spectrograms.flatten(0, 1))).reshape(batch, -1, self.aproj.out_features)
        return self.transformer(picture, sound)


# ---------------------------------------------------------------------------- loading


class CheckpointError(ValueError):
    """The checkpoint is missing, unreadable or not a Synchformer state dict; the message says how to fetch it."""


def _count(state: dict, prefix: str) -> int:
    return len({key[len(prefix):].split(".")[0] for key in state if key.startswith(prefix)})


FETCH = (f"fetch it with `wget {CHECKPOINT_URL}` and pass model.av_sync.checkpoint=/path/to/synchformer_state_dict.pth "
         "(or choose the model-free model.av_sync.method=onset_xcorr)")


def check_checkpoint_path(path: str | None) -> None:
    """What can be told of the checkpoint without reading it: given, there, a file."""
    if not path:
        raise CheckpointError(f"av_sync method=synchformer needs its checkpoint, synchformer_state_dict.pth: {FETCH}")
    if not Path(path).exists():
        raise CheckpointError(f"the Synchformer checkpoint {path} does not exist: {FETCH}")
    if not Path(path).is_file():
        raise CheckpointError(f"the Synchformer checkpoint {path} is a folder; give the file synchformer_state_dict.pth: {FETCH}")


def load_synchformer(path: str | None, device: torch.device, dtype: torch.dtype) -> Synchformer:
    """The released state dict (or one of its shape with other widths or depths), read with
    `weights_only=True` and mapped strictly: a tensor missing, left over or of another shape is an error naming it."""
    check_checkpoint_path(path)
    fetch = FETCH
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path} holds pickled Python objects, not only tensors, and is not read (weights_only=True): "
                              f"{fetch}") from None
    except Exception as exc:
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({type(exc).__name__}): {fetch}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # the authors' training checkpoints keep it under "model"
    if not isinstance(state, dict) or "vproj.weight" not in state:
        raise CheckpointError(f"{path} is not a Synchformer state dict (no vproj.weight): {fetch}")
    model = Synchformer(dim=state["vproj.weight"].shape[0], video_depth=_count(state, "vfeat_extractor.blocks."),
                        audio_depth=_count(state, "afeat_extractor.ast.encoder.layer."),
                        sync_depth=_count(state, "transformer.blocks."))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(f"{key} {tuple(state[key].shape)} (expected {tuple(expected[key].shape)})"
                   for key in set(state) & set(expected) if state[key].shape != expected[key].shape)
    for problem, keys in (("missing", missing), ("left over", extra), ("of the wrong shape", wrong)):
        if keys:
            raise CheckpointError(f"Synchformer checkpoint {path}: {len(keys)} tensor(s) {problem}: "
                                  f"{', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}")
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval()


def decide(logits: torch.Tensor) -> dict:
    """Per-window logits [W, 21] -> the clip's offset (positive: audio lags), its probabilities, per-window
    predictions and DeSync as av-benchmark computes it (the mean over windows of |offset of the top class|)."""
    probabilities = logits.float().softmax(dim=-1)
    mean = probabilities.mean(dim=0)
    best = int(mean.argmax())
    tops = probabilities.argmax(dim=-1).tolist()
    return {
        # a class k means the sound was taken OFFSETS_S[k] later than the picture: audio that leads
        "offset_s": round(-float(OFFSETS_S[best]) + 0.0, 4),
        "confidence": round(float(mean[best]), 4),
        "offset_probabilities": [round(float(p), 5) for p in mean],
        "window_offsets_s": [round(-float(OFFSETS_S[k]) + 0.0, 4) for k in tops],
        "window_confidences": [round(float(probabilities[i, k]), 4) for i, k in enumerate(tops)],
        "desync_s": round(float(np.mean([abs(OFFSETS_S[k]) for k in tops])), 4),
    }


def window_starts(total_segments: int) -> list[int]:
    """First segment of each 14-segment window: from the start every 14 segments, and one that ends at the last
    segment (for an 8 s clip: av-benchmark's first and last 4.8 s)."""
    if total_segments < SEGMENTS_PER_WINDOW:
        return []
    last = total_segments - SEGMENTS_PER_WINDOW
    starts = list(range(0, last + 1, SEGMENTS_PER_WINDOW))
    return starts if starts[-1] == last else starts + [last]


def segment_count(frames: int, samples: int) -> int:
    """Segments that both streams hold in full (the authors' GenerateMultipleSegments count)."""
    by_frames = (frames - SEGMENT_FRAMES) // SEGMENT_STEP + 1 if frames >= SEGMENT_FRAMES else 0
    by_samples = (samples - SEGMENT_SAMPLES) // SEGMENT_SAMPLE_STEP + 1 if samples >= SEGMENT_SAMPLES else 0
    return max(0, min(by_frames, by_samples))


def aligned_audio(audio: np.ndarray, audio_start: float | None, video_start: float) -> np.ndarray:
    """The sound on the picture's clock: sample n plays at video_start + n / 16000. Sound that starts after the
    picture is preceded by silence, as a player plays it; sound before the first frame is dropped."""
    shift = int(round(((audio_start or 0.0) - video_start) * SAMPLE_RATE))
    if shift > 0:
        return np.concatenate([np.zeros(shift, dtype=np.float32), audio.astype(np.float32, copy=False)])
    return audio[-shift:].astype(np.float32, copy=False)


def spectrogram_segments(audio: np.ndarray, segments: int) -> torch.Tensor:
    """[segments, 128, 66]: segment s covers samples [5120 s, 5120 s + 10240)."""
    signal = torch.from_numpy(np.ascontiguousarray(audio[:SEGMENT_SAMPLE_STEP * (segments - 1) + SEGMENT_SAMPLES]))
    return log_mel(signal.unfold(0, SEGMENT_SAMPLES, SEGMENT_SAMPLE_STEP))


def window_inputs(frames: torch.Tensor, spectrograms: torch.Tensor, starts: list[int], dtype: torch.dtype):
    """Model inputs for the windows of one clip: frames uint8 [T, 224, 224, 3] and spectrograms [S, 128, 66] (on
    the device) -> segments [W, 14, 3, 16, 224, 224] and spectrograms [W, 14, 128, 66]."""
    segment_ids = torch.tensor(starts, device=frames.device)[:, None] + torch.arange(SEGMENTS_PER_WINDOW, device=frames.device)
    frame_ids = segment_ids[..., None] * SEGMENT_STEP + torch.arange(SEGMENT_FRAMES, device=frames.device)  # [W, 14, 16]
    pictures = normalise_frames(frames[frame_ids], dtype)  # [W, 14, 16, 3, H, W]
    return pictures.transpose(2, 3), spectrograms[segment_ids].to(dtype)
