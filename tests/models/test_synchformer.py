"""Synchformer: the model against a reference forward written from the authors' code, the loader's strictness,
the spectrogram against its definition, the frames against ffmpeg's fps filter, windows as av-benchmark lays
them, and the head end to end with a tiny checkpoint in the released key layout."""

import math
import subprocess

import einops
import numpy as np
import pytest
import torch
from torch import einsum, nn

from conftest import REPO, compose_cfg, ffmpeg_output, make_clip, read_records, write_shard
from extract.decode import MediaSpec, decode_media
from extract.errors import ConfigError
from extract.models import synchformer
from extract.runner import run

DIM = 48  # divisible by the released head counts (12 and 8), so the tiny model keeps them


# ---------------------------------------------------------------------------- the released layout, from the authors' module tree


def released_layout(dim=DIM, video_depth=1, audio_depth=1, sync_depth=1) -> dict[str, tuple]:
    """Every tensor of av-benchmark's `Synchformer()` state dict (the one MMAudio releases), by name and shape,
    read off the authors' modules: MotionFormer(VisionTransformer), AST(ASTForAudioClassification), GlobalTransformer."""
    layout = {}

    def linear(name, fan_in, fan_out):
        layout[f"{name}.weight"], layout[f"{name}.bias"] = (fan_out, fan_in), (fan_out,)

    def norm(name):
        layout[f"{name}.weight"] = layout[f"{name}.bias"] = (dim,)

    def encoder_layer(name):  # torch.nn.TransformerEncoderLayer + the authors' cls_token
        layout[f"{name}.cls_token"] = (1, 1, dim)
        layout[f"{name}.self_attn.in_proj_weight"], layout[f"{name}.self_attn.in_proj_bias"] = (3 * dim, dim), (3 * dim,)
        linear(f"{name}.self_attn.out_proj", dim, dim)
        linear(f"{name}.linear1", dim, 4 * dim)
        linear(f"{name}.linear2", 4 * dim, dim)
        norm(f"{name}.norm1")
        norm(f"{name}.norm2")

    v = "vfeat_extractor"
    layout[f"{v}.cls_token"], layout[f"{v}.pos_embed"], layout[f"{v}.temp_embed"] = (1, 1, dim), (1, 197, dim), (1, 8, dim)
    layout[f"{v}.patch_embed.proj.weight"], layout[f"{v}.patch_embed.proj.bias"] = (dim, 3, 16, 16), (dim,)
    layout[f"{v}.patch_embed_3d.proj.weight"], layout[f"{v}.patch_embed_3d.proj.bias"] = (dim, 3, 2, 16, 16), (dim,)
    for i in range(video_depth):
        for attention in ("attn", "timeattn"):
            linear(f"{v}.blocks.{i}.{attention}.qkv", dim, 3 * dim)
            linear(f"{v}.blocks.{i}.{attention}.proj", dim, dim)
        for n in (1, 2, 3):
            norm(f"{v}.blocks.{i}.norm{n}")
        linear(f"{v}.blocks.{i}.mlp.fc1", dim, 4 * dim)
        linear(f"{v}.blocks.{i}.mlp.fc2", 4 * dim, dim)
    norm(f"{v}.norm")
    encoder_layer(f"{v}.spatial_attn_agg")

    a = "afeat_extractor.ast"
    layout[f"{a}.embeddings.cls_token"] = layout[f"{a}.embeddings.distillation_token"] = (1, 1, dim)
    layout[f"{a}.embeddings.position_embeddings"] = (1, 74, dim)
    layout[f"{a}.embeddings.patch_embeddings.projection.weight"] = (dim, 1, 16, 16)
    layout[f"{a}.embeddings.patch_embeddings.projection.bias"] = (dim,)
    for i in range(audio_depth):
        layer = f"{a}.encoder.layer.{i}"
        for name in ("query", "key", "value"):
            linear(f"{layer}.attention.attention.{name}", dim, dim)
        linear(f"{layer}.attention.output.dense", dim, dim)
        linear(f"{layer}.intermediate.dense", dim, 4 * dim)
        linear(f"{layer}.output.dense", 4 * dim, dim)
        norm(f"{layer}.layernorm_before")
        norm(f"{layer}.layernorm_after")
    norm(f"{a}.layernorm")
    encoder_layer("afeat_extractor.freq_attn_agg")

    linear("vproj", dim, dim)
    linear("aproj", dim, dim)
    t = "transformer"
    norm(f"{t}.vis_in_lnorm")
    norm(f"{t}.aud_in_lnorm")
    layout[f"{t}.OFF_tok"] = layout[f"{t}.MOD_tok"] = (1, 1, dim)
    layout[f"{t}.pos_emb_cfg.pos_emb"] = (1, 198, dim)
    for i in range(sync_depth):
        for name in ("key", "query", "value", "proj"):
            linear(f"{t}.blocks.{i}.attn.{name}", dim, dim)
        norm(f"{t}.blocks.{i}.ln1")
        norm(f"{t}.blocks.{i}.ln2")
        linear(f"{t}.blocks.{i}.mlp.0", dim, 4 * dim)
        linear(f"{t}.blocks.{i}.mlp.2", 4 * dim, dim)
    norm(f"{t}.ln_f")
    linear(f"{t}.off_head", dim, 21)
    return layout


def random_state(seed=0, **depths) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in released_layout(**depths).items():
        values = torch.randn(shape, generator=generator)
        if "norm" in name.split(".")[-2] or name.split(".")[-2].startswith(("ln", "layernorm")):
            values = 1 + 0.1 * values if name.endswith("weight") else 0.1 * values
        else:
            values = values / math.sqrt(max(shape[-1], 1)) if len(shape) > 1 else 0.1 * values
        state[name] = values
    return state


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("synchformer") / "synchformer_state_dict.pth"
    torch.save(random_state(video_depth=2, audio_depth=2, sync_depth=2), path)  # a second block sees tokens that differ by segment
    return path


# ---------------------------------------------------------------------------- the reference forward, in the authors' terms


def _qkv_attn(q, k, v):  # vit_helper.qkv_attn
    return einsum("b i j, b j d -> b i d", einsum("b i d, b j d -> b i j", q, k).softmax(dim=-1), v)


def _divided_attention(sd, p, x, heads, einops_from, einops_to, **dims):  # vit_helper.DividedAttention.forward
    q, k, v = nn.functional.linear(x, sd[f"{p}.qkv.weight"], sd[f"{p}.qkv.bias"]).chunk(3, dim=-1)
    q, k, v = (einops.rearrange(t, "b n (h d) -> (b h) n d", h=heads) for t in (q, k, v))
    q = q * (q.shape[-1] ** -0.5)
    (cls_q, q_), (cls_k, k_), (cls_v, v_) = ((t[:, 0:1], t[:, 1:]) for t in (q, k, v))
    cls_out = _qkv_attn(cls_q, k, v)
    q_, k_, v_ = (einops.rearrange(t, f"{einops_from} -> {einops_to}", **dims) for t in (q_, k_, v_))
    r = q_.shape[0] // cls_k.shape[0]
    cls_k, cls_v = (einops.repeat(t, "b () d -> (b r) () d", r=r) for t in (cls_k, cls_v))
    out = _qkv_attn(q_, torch.cat((cls_k, k_), dim=1), torch.cat((cls_v, v_), dim=1))
    out = einops.rearrange(out, f"{einops_to} -> {einops_from}", **dims)
    out = einops.rearrange(torch.cat((cls_out, out), dim=1), "(b h) n d -> b n (h d)", h=heads)
    return nn.functional.linear(out, sd[f"{p}.proj.weight"], sd[f"{p}.proj.bias"])


def _ln(sd, p, x, eps):
    return nn.functional.layer_norm(x, x.shape[-1:], sd[f"{p}.weight"], sd[f"{p}.bias"], eps)


def _lin(sd, p, x):
    return nn.functional.linear(x, sd[f"{p}.weight"], sd[f"{p}.bias"])


def _base_encoder_layer(sd, p, x, heads):  # motionformer.BaseEncoderLayer: torch's layer over [CLS, x], CLS out
    dim = x.shape[-1]
    layer = nn.TransformerEncoderLayer(d_model=dim, nhead=heads, activation=nn.GELU(), batch_first=True,
                                       dim_feedforward=4 * dim, dropout=0.0, layer_norm_eps=1e-6, norm_first=True).eval()
    layer.load_state_dict({k[len(p) + 1:]: t for k, t in sd.items() if k.startswith(p + ".") and k != f"{p}.cls_token"})
    x = torch.cat((sd[f"{p}.cls_token"].expand(x.shape[0], -1, -1), x), dim=-2)
    return layer(src=x)[:, 0, :]


def reference_video(sd, vis):  # Synchformer.extract_vfeats + MotionFormer.forward(_segments/_features), vis (B, S, Tv, C, H, W)
    B, S, Tv, C, H, W = vis.shape
    x = vis.permute(0, 1, 3, 2, 4, 5).reshape(B * S, C, Tv, H, W)
    p = "vfeat_extractor"
    x = nn.functional.conv3d(x, sd[f"{p}.patch_embed_3d.proj.weight"], sd[f"{p}.patch_embed_3d.proj.bias"], stride=(2, 16, 16))
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat((sd[f"{p}.cls_token"].expand(B * S, -1, -1), x), dim=1)
    npatch, frames = 196, 8
    pos = sd[f"{p}.pos_embed"]
    total = torch.cat([pos[:, 0, :].unsqueeze(1), pos[:, 1:, :].repeat(1, frames, 1) + sd[f"{p}.temp_embed"].repeat_interleave(npatch, 1)], dim=1)
    x = x + total
    i = 0
    while f"{p}.blocks.{i}.norm1.weight" in sd:  # DividedSpaceTimeBlock.forward
        b = f"{p}.blocks.{i}"
        x = x + _divided_attention(sd, f"{b}.timeattn", _ln(sd, f"{b}.norm3", x, 1e-6), 12, "b (f n) d", "(b n) f d", n=npatch)
        x = x + _divided_attention(sd, f"{b}.attn", _ln(sd, f"{b}.norm1", x, 1e-6), 12, "b (f n) d", "(b f) n d", f=frames)
        x = x + _lin(sd, f"{b}.mlp.fc2", nn.functional.gelu(_lin(sd, f"{b}.mlp.fc1", _ln(sd, f"{b}.norm2", x, 1e-6))))
        i += 1
    x = _ln(sd, f"{p}.norm", x[:, 1:, :], 1e-6)
    D = x.shape[-1]
    x = x.permute(0, 2, 1).reshape(B * S, D, 8, 14, 14)  # restore_spatio_temp_dims
    x = einops.rearrange(x, "BS D t h w -> (BS t) (h w) D")  # SpatialTransformerEncoderLayer
    x = _base_encoder_layer(sd, f"{p}.spatial_attn_agg", x, 12)
    x = einops.rearrange(x, "(BS t) D -> BS t D", BS=B * S, t=8)
    return x.view(B, S, *x.shape[1:])


def reference_audio(sd, aud):  # Synchformer.extract_afeats + AST.forward, aud (B, S, 1, F, Ta)
    B, S, _, Fa, Ta = aud.shape
    x = aud.view(B, S, Fa, Ta).permute(0, 1, 3, 2).reshape(B * S, Ta, Fa)
    p = "afeat_extractor.ast"
    x = x.unsqueeze(1).transpose(2, 3)  # ASTPatchEmbeddings
    x = nn.functional.conv2d(x, sd[f"{p}.embeddings.patch_embeddings.projection.weight"],
                             sd[f"{p}.embeddings.patch_embeddings.projection.bias"], stride=(10, 10)).flatten(2).transpose(1, 2)
    x = torch.cat((sd[f"{p}.embeddings.cls_token"].expand(B * S, -1, -1), sd[f"{p}.embeddings.distillation_token"].expand(B * S, -1, -1), x), dim=1)
    x = x + sd[f"{p}.embeddings.position_embeddings"]
    i, heads = 0, 12
    while f"{p}.encoder.layer.{i}.layernorm_before.weight" in sd:  # ASTLayer (HF ViT-style attention)
        layer = f"{p}.encoder.layer.{i}"
        h = _ln(sd, f"{layer}.layernorm_before", x, 1e-12)

        def split(t):
            return t.view(t.shape[0], t.shape[1], heads, -1).permute(0, 2, 1, 3)

        q, k, v = (split(_lin(sd, f"{layer}.attention.attention.{n}", h)) for n in ("query", "key", "value"))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        context = torch.matmul(scores.softmax(dim=-1), v).permute(0, 2, 1, 3).reshape(x.shape)
        x = x + _lin(sd, f"{layer}.attention.output.dense", context)
        x = x + _lin(sd, f"{layer}.output.dense", nn.functional.gelu(_lin(sd, f"{layer}.intermediate.dense", _ln(sd, f"{layer}.layernorm_after", x, 1e-12))))
        i += 1
    x = _ln(sd, f"{p}.layernorm", x, 1e-12)
    D = x.shape[-1]
    x = x[:, 2:, :].permute(0, 2, 1).view(B * S, D, 12, 6)  # restore_freq_temp_dims
    x = x.permute(0, 3, 2, 1).reshape(B * S * 6, 12, D)  # FrequencyTransformerEncoderLayer
    x = _base_encoder_layer(sd, "afeat_extractor.freq_attn_agg", x, 12).view(B * S, 6, D)
    return x.view(B, S, *x.shape[1:])


def reference_logits(sd, vis, aud):  # Synchformer.forward + GlobalTransformer.forward (minGPT blocks)
    v, a = _lin(sd, "vproj", reference_video(sd, vis)), _lin(sd, "aproj", reference_audio(sd, aud))
    B, S, tv, D = v.shape
    v, a = v.view(B, S * tv, D), a.view(B, -1, D)
    t = "transformer"
    x = torch.cat((sd[f"{t}.OFF_tok"].expand(B, 1, D), _ln(sd, f"{t}.vis_in_lnorm", v, 1e-5),
                   sd[f"{t}.MOD_tok"].expand(B, 1, D), _ln(sd, f"{t}.aud_in_lnorm", a, 1e-5)), dim=1)
    x = x + sd[f"{t}.pos_emb_cfg.pos_emb"]
    i = 0
    while f"{t}.blocks.{i}.ln1.weight" in sd:
        b = f"{t}.blocks.{i}"
        h = _ln(sd, f"{b}.ln1", x, 1e-5)
        T = x.shape[1]
        k, q, vv = (_lin(sd, f"{b}.attn.{n}", h).view(B, T, 8, D // 8).transpose(1, 2) for n in ("key", "query", "value"))
        att = ((q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))).softmax(dim=-1)
        x = x + _lin(sd, f"{b}.attn.proj", (att @ vv).transpose(1, 2).contiguous().view(B, T, D))
        x = x + _lin(sd, f"{b}.mlp.2", nn.functional.gelu(_lin(sd, f"{b}.mlp.0", _ln(sd, f"{b}.ln2", x, 1e-5))))
        i += 1
    return _lin(sd, f"{t}.off_head", _ln(sd, f"{t}.ln_f", x, 1e-5)[:, 0, :])


def test_the_model_gives_the_logits_of_a_forward_written_from_the_authors_code(checkpoint):
    state = torch.load(checkpoint, weights_only=True)
    model = synchformer.load_synchformer(str(checkpoint), torch.device("cpu"), torch.float32)
    generator = torch.Generator().manual_seed(1)
    vis = torch.randn(2, 14, 16, 3, 224, 224, generator=generator)  # the authors' (B, S, Tv, C, H, W)
    aud = torch.randn(2, 14, 1, 128, 66, generator=generator)  # (B, S, 1, F, Ta)
    with torch.no_grad():
        expected = reference_logits(state, vis, aud)
        ours = model(vis.transpose(2, 3), aud[:, :, 0])
    assert ours.shape == (2, 21)
    assert (expected[0] - expected[1]).abs().max() > 1e-2  # the two windows differ, so the comparison can fail
    torch.testing.assert_close(ours, expected, atol=2e-4, rtol=1e-4)


def test_a_window_gives_the_same_logits_alone_and_in_a_batch(checkpoint):
    model = synchformer.load_synchformer(str(checkpoint), torch.device("cpu"), torch.float32)
    generator = torch.Generator().manual_seed(2)
    vis, aud = torch.randn(3, 14, 3, 16, 224, 224, generator=generator), torch.randn(3, 14, 128, 66, generator=generator)
    with torch.no_grad():
        together = model(vis, aud)
        alone = model(vis[1:2], aud[1:2])
    torch.testing.assert_close(alone[0], together[1], atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------- loading


def test_the_loader_names_what_is_missing_left_over_or_misshapen(checkpoint, tmp_path):
    state = torch.load(checkpoint, weights_only=True)
    cases = {"missing": {k: v for k, v in state.items() if k != "transformer.off_head.bias"},
             "left over": {**state, "transformer.extra.weight": torch.zeros(1)},
             "wrong shape": {**state, "vfeat_extractor.temp_embed": torch.zeros(1, 9, DIM)}}
    for problem, broken in cases.items():
        path = tmp_path / f"{problem}.pth"
        torch.save(broken, path)
        with pytest.raises(synchformer.CheckpointError) as error:
            synchformer.load_synchformer(str(path), torch.device("cpu"), torch.float32)
        named = {"missing": "transformer.off_head.bias", "left over": "transformer.extra.weight",
                 "wrong shape": "vfeat_extractor.temp_embed (1, 9, 48) (expected (1, 8, 48))"}[problem]
        assert named in str(error.value) and "\n" not in str(error.value)
    for path in (None, tmp_path / "absent.pth"):
        with pytest.raises(synchformer.CheckpointError, match="synchformer_state_dict.pth") as error:
            synchformer.load_synchformer(path and str(path), torch.device("cpu"), torch.float32)
        assert synchformer.CHECKPOINT_URL in str(error.value)


def test_the_released_layout_builds_the_published_architecture():
    model = synchformer.Synchformer()  # 768 wide, 12 + 12 + 3 layers
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == released_layout(768, 12, 12, 3)


# ---------------------------------------------------------------------------- inputs


def reference_log_mel(signal: np.ndarray) -> np.ndarray:
    """torchaudio's MelSpectrogram(16000, n_fft=1024, win_length=400, hop_length=160, n_mels=128) by its definition,
    in float64 with an explicit DFT, then the authors' AudioLog, PadOrTruncate(66) and AudioNormalizeAST."""
    n_fft, win, hop = 1024, 400, 160
    padded = np.pad(signal.astype(np.float64), n_fft // 2, mode="reflect")
    window = np.zeros(n_fft)
    window[(n_fft - win) // 2:(n_fft - win) // 2 + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    frames = np.stack([padded[i * hop:i * hop + n_fft] * window for i in range(1 + len(signal) // hop)])
    k = np.arange(n_fft // 2 + 1)
    dft = np.exp(-2j * np.pi * np.outer(np.arange(n_fft), k) / n_fft)
    power = np.abs(frames @ dft) ** 2  # [frames, 513]
    hz = k * 8000 / 512

    def mel(f):
        return 2595 * np.log10(1 + f / 700)
    points = 700 * (10 ** (np.linspace(0, mel(8000), 130) / 2595) - 1)
    bank = np.zeros((513, 128))
    for m in range(128):
        left, centre, right = points[m], points[m + 1], points[m + 2]
        bank[:, m] = np.maximum(0, np.minimum((hz - left) / (centre - left), (right - hz) / (right - centre)))
    spec = np.log(power @ bank + 1e-6).T  # [128, frames]
    spec = np.pad(spec, ((0, 0), (0, 66 - spec.shape[1])))
    return (spec + 4.2677393) / (2 * 4.5689974)


def test_the_spectrogram_is_torchaudios_mel_spectrogram_as_the_authors_normalise_it():
    rng = np.random.default_rng(0)
    t = np.arange(10240) / 16000
    signal = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(10240)).astype(np.float32)
    ours = synchformer.log_mel(torch.from_numpy(signal)).numpy()
    assert ours.shape == (128, 66)
    expected = reference_log_mel(signal)
    assert np.abs(ours - expected).max() < 1e-3  # log domain, float32 against float64
    assert np.all(ours[:, 65] == pytest.approx(4.2677393 / (2 * 4.5689974)))  # the padded 66th column, log 0 normalised


@pytest.mark.parametrize("layout", ["from 0", "video from 0.1 s", "video from 0.1 s, sound from 0"])
def test_frames_at_25_fps_are_the_ones_ffmpegs_fps_filter_keeps(tmp_path, layout):
    # a 30 fps clip whose frame i has brightness 8 * i: which frames were kept reads off the picture
    source = ffmpeg_output("-f", "lavfi", "-i", "nullsrc=s=64x48:r=30:d=1.5", "-vf", "geq=lum='8*N':cb=128:cr=128",
                           "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p", suffix=".mkv")
    if layout != "from 0":  # ffmpeg counts slots from the file's earliest stream start: the sound's, when there is one
        sound = ["-f", "lavfi", "-i", "sine=d=1.6:r=16000", "-map", "0:v", "-map", "1:a", "-c:a", "pcm_s16le"] if "sound" in layout else []
        source = _delayed(source, sound, tmp_path)
    (tmp_path / "in.mkv").write_bytes(source)
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "in.mkv"), "-map", "0:v", "-vf", "fps=25",
                          "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "gray", "-"], capture_output=True, check=True).stdout
    theirs = np.frombuffer(raw, np.uint8).reshape(-1, 48, 64)[:, 24, 32].astype(int)
    media = decode_media(source, MediaSpec(fps=25, sampling="rate", max_frames=1000))
    assert media.video["start_s"] == pytest.approx(0.0 if layout == "from 0" else 0.1, abs=1e-3)
    ours = np.asarray(media.frames)[:, 24, 32].mean(-1).round().astype(int)
    assert len(ours) == len(theirs) == (37 if "sound" in layout else 38)
    assert np.abs(ours - theirs).max() <= 2 and len(set(theirs.tolist())) < 45  # some frames dropped, the same ones


def _delayed(source: bytes, sound: list[str], tmp_path) -> bytes:
    """The clip with its video stream starting at 0.1 s (and, given `sound`, a sound stream from 0)."""
    (tmp_path / "early.mkv").write_bytes(source)
    target = tmp_path / "delayed.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-itsoffset", "0.1", "-i", str(tmp_path / "early.mkv"), *sound,
                    "-c:v", "copy", str(target)], check=True)
    return target.read_bytes()


def test_frames_are_scaled_to_a_256_short_side_and_centre_cropped():
    media = decode_media(make_clip(1.0, tone=None, size="320x180", rate=25),
                         MediaSpec(fps=25, sampling="rate", short_side=256, exact_short_side=True, crop=224))
    assert np.asarray(media.frames).shape[1:] == (224, 224, 3)
    from extract.decode import _target_size
    spec = MediaSpec(short_side=256, exact_short_side=True)
    assert _target_size(spec, 1080, 1920) == (256, 454)  # ffmpeg: 1920 * 256 / 1080 = 455.1 -> 455 -> even 454
    assert _target_size(spec, 120, 160) == (256, 340)  # small pictures are scaled up, as the authors' re-encode does
    assert _target_size(spec, 1920, 1080) == (454, 256)
    assert _target_size(spec, 360, 641) == (256, 454)  # 455.8: ffmpeg truncates to 455, then the even crop 454
    from extract.decode import _centre_crop
    columns = torch.arange(454)[None, :, None].expand(256, 454, 3)
    cropped = _centre_crop(columns, (224, 224))
    assert cropped.shape == (224, 224, 3) and cropped[0, 0, 0] == 115  # int(round((454 - 224) / 2)), RGBSpatialCrop's
    assert _centre_crop(torch.arange(455)[None, :, None].expand(256, 455, 3), (224, 224))[0, 0, 0] == 116  # Python rounds 115.5 up


def test_windows_are_laid_out_as_av_benchmark_does_for_desync():
    # an 8 s clip: 200 frames, 128000 samples -> 24 segments; av-benchmark scores the first and the last 14
    assert synchformer.segment_count(200, 128000) == 24
    assert synchformer.window_starts(24) == [0, 10]
    assert synchformer.window_starts(14) == [0] and synchformer.window_starts(13) == []
    assert synchformer.window_starts(30) == [0, 14, 16]
    assert synchformer.segment_count(200, 64000) == 11  # the sound ends first: (64000 - 10240) // 5120 + 1
    frames = torch.arange(200, dtype=torch.uint8)[:, None, None, None].expand(200, 2, 2, 3)
    spectrograms = torch.arange(24, dtype=torch.float32)[:, None, None].expand(24, 128, 66)
    pictures, sounds = synchformer.window_inputs(frames, spectrograms, [0, 10], torch.float32)
    assert pictures.shape == (2, 14, 3, 16, 2, 2) and sounds.shape == (2, 14, 128, 66)
    first_frames = ((pictures[:, :, 0, :, 0, 0] * 0.5 + 0.5) * 255).round()  # [window, segment, frame]
    assert first_frames[1, 0, 0] == 80 and first_frames[1, 13, 15] == 80 + 13 * 8 + 15  # av-benchmark's x[:, -14:]
    assert sounds[1, :, 0, 0].tolist() == list(range(10, 24))


def test_audio_segments_follow_the_frames_on_one_clock():
    signal = np.arange(16000 * 6, dtype=np.float32)
    late = synchformer.aligned_audio(signal, audio_start=0.5, video_start=0.0)  # sound starts 0.5 s after the picture
    assert (late[:8000] == 0).all() and late[8000] == 0
    early = synchformer.aligned_audio(signal, audio_start=0.0, video_start=0.25)
    assert early[0] == 4000
    sound = np.sin(np.arange(16000 * 6) / 7).astype(np.float32) * np.linspace(0, 1, 16000 * 6, dtype=np.float32)
    spectrograms = synchformer.spectrogram_segments(sound, 17)
    assert spectrograms.shape == (17, 128, 66)
    for s in (0, 3, 16):  # segment s starts where frame 8 s does, 640 samples a frame
        start = s * 8 * 640
        torch.testing.assert_close(spectrograms[s], synchformer.log_mel(torch.from_numpy(sound[start:start + 10240])))


def test_the_offset_sign_and_desync():
    logits = torch.full((2, 21), -10.0)
    logits[0, 15] = logits[1, 15] = 10.0  # class +1.0 s: the sound was taken 1 s later than the picture, so it leads
    decided = synchformer.decide(logits)
    assert decided["offset_s"] == -1.0 and decided["confidence"] > 0.99 and decided["desync_s"] == 1.0
    logits[1] = -10.0
    logits[1, 9] = 10.0  # -0.2 s
    decided = synchformer.decide(logits)
    assert decided["window_offsets_s"] == [-1.0, 0.2] and decided["desync_s"] == pytest.approx(0.6)
    assert sum(decided["offset_probabilities"]) == pytest.approx(1.0, abs=1e-4)


# ---------------------------------------------------------------------------- the head end to end


def test_av_sync_with_synchformer_end_to_end(checkpoint, tmp_path):
    (tmp_path / "in").mkdir()
    members = [("tone (0-6).mp4", make_clip(6.0, tone=440, size="96x64", rate=30)),
               ("long tone (0-9).mp4", make_clip(9.0, tone=660, size="64x96", rate=24)),
               ("short (0-3).mp4", make_clip(3.0, tone=440, size="96x64", rate=25)),
               ("silent film (0-6).mp4", make_clip(6.0, tone=None, size="96x64", rate=25)),
               ("broken (0-1).mp4", np.random.default_rng(0).bytes(4000))]
    write_shard(tmp_path / "in" / "a.tar", members)
    cfg = compose_cfg("+model=[probe,av_sync]", "model.av_sync.method=synchformer", f"model.av_sync.checkpoint={checkpoint}",
                      f"tar_folder={tmp_path / 'in'}", f"output_dir={tmp_path / 'out'}", "num_workers=1", "batch_size=2",
                      "wandb.mode=disabled")
    run(cfg)
    records = {r["video_id"]: r for r in read_records(tmp_path / "out" / "av_sync")}
    assert len(records) == 5
    # 6 s: 17 segments, windows at segments 0 and 3; 9 s: 27 segments, windows at 0 and 13 (the last 4.8 s)
    for video_id, windows in (("tone", [(0.0, 4.8), (0.96, 5.76)]), ("long tone", [(0.0, 4.8), (4.16, 8.96)])):
        record = records[video_id]
        assert record["status"] == "ok" and record["method"] == "synchformer", record
        assert [(w["start_s"], w["end_s"]) for w in record["windows"]] == windows
        assert sum(record["offset_probabilities"]) == pytest.approx(1.0, abs=1e-3) and len(record["offset_probabilities"]) == 21
        assert record["offset_s"] in [round(-x + 0.0, 4) for x in synchformer.OFFSETS_S]
        assert record["confidence"] == pytest.approx(max(record["offset_probabilities"]), abs=1e-4)
        assert record["desync_s"] == pytest.approx(np.mean([abs(w["offset_s"]) for w in record["windows"]]), abs=1e-3)
        assert record["model"] == str(checkpoint) and record["fps"] == 25.0
        assert (record["video_stream_index"], record["audio_stream_index"]) == (0, 1)  # the streams the estimate is of
    assert (records["short"]["status"], records["short"]["error_type"]) == ("skipped", "too_short")
    assert (records["silent film"]["status"], records["silent film"]["error_type"]) == ("skipped", "no_audio")
    assert records["broken"]["status"] == "error"


def test_sound_that_starts_late_in_the_container_reaches_the_model_late():
    from extract.bench.synthetic import flash_click_clip
    from extract.heads import Clip, build

    head = build("av_sync", {"method": "synchformer"})
    def prepared(data):
        media = decode_media(data, head.media_spec)
        return media, head.prepare(Clip("k", "v", None, None, media))

    plain_media, _ = prepared(flash_click_clip(25, 0.0, seconds=6.0))
    late_media, late = prepared(flash_click_clip(25, 0.0, seconds=6.0, audio_delay=0.6))
    assert late_media.audio_start == pytest.approx(0.6, abs=0.01)
    played = np.concatenate([np.zeros(9600, np.float32), np.asarray(plain_media.audio)])  # what a player plays
    expected = synchformer.spectrogram_segments(played, len(late["spectrograms"]))
    torch.testing.assert_close(late["spectrograms"], expected, atol=1e-4, rtol=1e-4)
    assert late["frames"].shape[1:] == (224, 224, 3) and late["frames"].dtype == torch.uint8


def test_the_sound_is_laid_on_the_clock_of_the_fps_filters_frames(tmp_path):
    """A picture that starts 0.03 s after its sound: ffmpeg's first 25 fps frame is slot 1 (0.04 s), so the sound
    the model hears with frame 0 starts 640 samples in. A 5 s clip holds one window."""
    from extract.bench.synthetic import flash_click_clip
    from extract.heads import Clip, build

    (tmp_path / "clip.mkv").write_bytes(flash_click_clip(25, 0.0, seconds=5.0))
    subprocess.run(["ffmpeg", "-v", "error", "-itsoffset", "0.03", "-i", str(tmp_path / "clip.mkv"), "-i", str(tmp_path / "clip.mkv"),
                    "-map", "0:v", "-map", "1:a", "-c", "copy", str(tmp_path / "late.mkv")], check=True)
    head = build("av_sync", {"method": "synchformer"})
    media = decode_media((tmp_path / "late.mkv").read_bytes(), head.media_spec)
    assert media.video["start_s"] == pytest.approx(0.03, abs=1e-3) and media.audio_start == pytest.approx(0.0, abs=1e-3)
    prepared = head.prepare(Clip("k", "v", None, None, media))
    assert prepared["starts"] == [0]
    expected = synchformer.spectrogram_segments(np.asarray(media.audio)[640:], len(prepared["spectrograms"]))
    torch.testing.assert_close(prepared["spectrograms"], expected, atol=1e-4, rtol=1e-4)


def test_a_missing_synchformer_checkpoint_is_one_line_before_any_work(tmp_path):
    from conftest import run_cli

    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "a.tar", [("tone (0-6).mp4", make_clip(6.0, tone=440, size="96x64", rate=25))])
    # synchformer is the default method: +model=av_sync alone needs the checkpoint, and says how to get it or do without
    result = run_cli("+model=av_sync", f"tar_folder={tmp_path / 'in'}", f"output_dir={tmp_path / 'out'}", "wandb.mode=disabled")
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and synchformer.CHECKPOINT_URL in lines[0], result.stderr[-2000:]
    assert "model.av_sync.checkpoint" in lines[0] and "method=onset_xcorr" in lines[0]
    assert not (tmp_path / "out" / "av_sync").exists() or not any((tmp_path / "out" / "av_sync").glob("*.tar*"))
    # the launcher finds it once, before any rank starts
    import subprocess
    import sys

    launched = subprocess.run([sys.executable, "-m", "extract.launch", "--standalone", "--nproc_per_node", "2", "--",
                               "+model=av_sync", f"tar_folder={tmp_path / 'in'}", f"output_dir={tmp_path / 'out2'}"],
                              capture_output=True, text=True, timeout=300, cwd=REPO)
    assert launched.returncode == 2 and launched.stderr.count("error:") == 1 and synchformer.CHECKPOINT_URL in launched.stderr
    # a file that is there but is no checkpoint: found when the weights load, still one line
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    broken = run_cli("+model=av_sync", f"model.checkpoint={tmp_path / 'broken.pth'}", f"tar_folder={tmp_path / 'in'}",
                     f"output_dir={tmp_path / 'out3'}", "wandb.mode=disabled", "num_workers=0")
    lines = [line for line in broken.stderr.strip().splitlines() if line.strip()]
    assert broken.returncode == 2 and lines[-1].startswith("error: ") and f"{tmp_path / 'broken.pth'} " in lines[-1] \
        and synchformer.CHECKPOINT_URL in lines[-1], broken.stderr[-2000:]
    assert "Traceback" not in broken.stderr


def test_options_the_method_would_ignore_and_bad_checkpoints_are_one_line_errors(tmp_path):
    from extract.heads import build

    for options, words in (({"method": "synchformer", "max_offset": 0.5}, "max_offset is for method=onset_xcorr"),
                           ({"method": "onset_xcorr", "checkpoint": "x.pth"}, "checkpoint is for method=synchformer"),
                           ({"method": "synchformer", "max_seconds": 1.0}, "shorter than one Synchformer window"),
                           ({"method": "synchformer", "window_batch": 0}, "window_batch=0"),
                           ({"method": "synchformer", "dtype": "foo"}, "dtype='foo'")):
        with pytest.raises(ConfigError, match=words):
            build("av_sync", options)
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "text.pth").write_text("hello")
    torch.save(nn.Linear(2, 2), tmp_path / "module.pth")
    for path, words in ((tmp_path / "empty.pth", "is not a PyTorch checkpoint"), (tmp_path / "text.pth", "is not a PyTorch checkpoint"),
                        (tmp_path, "is a folder"), (tmp_path / "module.pth", "pickled Python objects")):
        with pytest.raises(synchformer.CheckpointError, match=words) as error:
            synchformer.load_synchformer(str(path), torch.device("cpu"), torch.float32)
        assert "model.av_sync.checkpoint=" in str(error.value) and "\n" not in str(error.value) and "\x1b" not in str(error.value)


def _flat_rgb(data: bytes, matrix: str) -> np.ndarray:
    """ffmpeg's RGB of a flat-colour clip's first frame, converting its YUV with `matrix` whatever its tag says."""
    raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", "pipe:0", "-frames:v", "1", "-vf",
                          f"scale=in_color_matrix={matrix}:in_range=tv,format=rgb24", "-f", "rawvideo", "pipe:1"],
                         input=data, capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(float).mean(axis=0)


def test_frames_tagged_bt709_reach_the_model_as_bt601_as_read_video_gives_them():
    """torchvision's read_video converts with PyAV's to_rgb(), BT.601 whatever the stream's tag; ffmpeg (and so the
    decoder here) honours a BT.709 tag. A flat colour tagged BT.709 must reach Synchformer as ffmpeg's BT.601
    reading of the same YUV."""
    from extract.heads import Clip, build

    data = ffmpeg_output("-f", "lavfi", "-i", "color=c=0xC83C28:s=320x240:r=25:d=5", "-f", "lavfi", "-i", "sine=f=440:d=5",
                         "-vf", "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p", "-colorspace", "bt709",
                         "-color_primaries", "bt709", "-color_trc", "bt709", "-c:v", "libx264", "-c:a", "aac", "-shortest")
    bt601, bt709 = _flat_rgb(data, "bt601"), _flat_rgb(data, "bt709")
    assert np.abs(bt601 - bt709).max() > 8  # the two readings differ: the test can tell them apart
    head = build("av_sync", {"method": "synchformer"})
    media = decode_media(data, head.media_spec)
    assert media.video["color_space"] == "bt709"
    prepared = head.prepare(Clip("k", "v", None, None, media))
    seen = prepared["frames"][:, 16:-16, 16:-16].reshape(-1, 3).double().mean(dim=0).numpy()
    # within 3 levels: swscale rounds both conversions (its BT.709 green is 2 below the exact value here)
    np.testing.assert_allclose(seen, bt601, atol=3)
    assert np.abs(seen - bt601).max() < np.abs(seen - bt709).max()
    untagged = ffmpeg_output("-f", "lavfi", "-i", "color=c=0xC83C28:s=320x240:r=25:d=5", "-f", "lavfi", "-i", "sine=f=440:d=5",
                             "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest")
    plain = head.prepare(Clip("k", "v", None, None, decode_media(untagged, head.media_spec)))
    np.testing.assert_allclose(plain["frames"][:, 16:-16, 16:-16].reshape(-1, 3).double().mean(dim=0).numpy(),
                               _flat_rgb(untagged, "bt601"), atol=1.5)  # untagged: ffmpeg reads it as BT.601 already
