"""BEATs-Conformer-BART (extract/models/beats_conformer_bart.py) against its definitions: Kaldi's fbank written out,
BEATs' input normalisation, relative position buckets and gated attention as the authors write them, and the loader
of the release's state dict, on a tiny random release-format checkpoint on CPU."""

import numpy as np
import pytest
import torch

from extract.models.beats_conformer_bart import CheckpointMismatch, kaldi_fbank, load_state
from tiny import TINY_CAPTIONER, released_layout, random_released_state, save_tiny_audio_captioner, tiny_bart_tokenizer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_audio_captioner(tmp_path_factory.mktemp("tiny-captioner"))


# ---------------------------------------------------------------------------- front end
def reference_fbank(signal: np.ndarray, bins: int = 128) -> np.ndarray:
    """Kaldi's fbank written out frame by frame in float64 from its definition (compute-fbank-feats)."""
    length, shift, fft = 400, 160, 512
    n = np.arange(length)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * n / (length - 1))) ** 0.85  # povey
    mel = lambda f: 1127.0 * np.log(1 + f / 700.0)  # noqa: E731
    low, high = mel(20.0), mel(8000.0)
    centres = [low + (high - low) * m / (bins + 1) for m in range(bins + 2)]  # edges: left, centre, right
    out = []
    for start in range(0, len(signal) - length + 1, shift):
        frame = signal[start : start + length].astype(np.float64)
        frame = frame - frame.mean()
        frame = np.append(frame[0] - 0.97 * frame[0], frame[1:] - 0.97 * frame[:-1])
        power = np.abs(np.fft.rfft(frame * window, fft)) ** 2
        energies = []
        for m in range(bins):
            total = 0.0
            for k in range(fft // 2):  # Kaldi leaves the Nyquist bin out
                f = mel(k * 16000 / fft)
                left, centre, right = centres[m], centres[m + 1], centres[m + 2]
                if left < f < right:
                    total += power[k] * ((f - left) / (centre - left) if f <= centre else (right - f) / (right - centre))
            energies.append(total)
        out.append(np.log(np.maximum(energies, np.finfo(np.float32).eps)))
    return np.array(out)


SIGNAL = np.random.default_rng(0).uniform(-0.5, 0.5, 16000 // 4).astype(np.float32) * 2**15


def test_fbank_matches_kaldis_definition():
    ours = kaldi_fbank(torch.from_numpy(SIGNAL)).numpy()
    assert ours.shape == (1 + (len(SIGNAL) - 400) // 160, 128)
    np.testing.assert_allclose(ours, reference_fbank(SIGNAL), atol=2e-3)


@pytest.mark.parametrize("bins", [23, 80, 120])
def test_fbank_is_kaldis_fbank(bins):
    """Against Kaldi's own feature code (kaldi-native-fbank, a port of Kaldi's compute-fbank-feats) with the settings of
    torchaudio.compliance.kaldi.fbank that BEATs uses: no dither, DC removal, pre-emphasis 0.97, povey window, power
    spectrum, log, snip_edges, 25 ms / 10 ms frames. (torchaudio has no build for this torch; Kaldi refuses 128 bins at
    16 kHz because its lowest bins hold no FFT point, which torchaudio allows: the formula is the same at every count.)"""
    import kaldi_native_fbank as knf

    options = knf.FbankOptions()
    options.frame_opts.dither = 0.0
    options.frame_opts.samp_freq = 16000
    options.mel_opts.num_bins = bins
    fbank = knf.OnlineFbank(options)
    fbank.accept_waveform(16000, SIGNAL.tolist())
    fbank.input_finished()
    theirs = np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])
    ours = kaldi_fbank(torch.from_numpy(SIGNAL), bins).numpy()
    assert ours.shape == theirs.shape == (1 + (len(SIGNAL) - 400) // 160, bins)
    np.testing.assert_allclose(ours, theirs, atol=5e-4)


# ---------------------------------------------------------------------------- release loader
def _layout():
    from extract.models.beats_conformer_bart import BEATS_CONFIG

    return released_layout(TINY_CAPTIONER["bart"], {**BEATS_CONFIG, **TINY_CAPTIONER["beats_config"]},
                           {"num_hidden_layers": 2, **TINY_CAPTIONER["conformer_config"]}, len(tiny_bart_tokenizer()))


def _empty_model(checkpoint):
    from extract.models.beats_conformer_bart import BeatsConformerBart, read_bart_config

    config, extra, released = read_bart_config(checkpoint)
    return BeatsConformerBart(config, **extra, **released)


def test_loader_uses_every_released_tensor_and_fills_every_parameter(checkpoint):
    state = random_released_state(_layout(), seed=3)
    model = _empty_model(checkpoint)
    load_state(model, state)
    ours = model.state_dict()
    assert torch.equal(ours["bart.lm_head.weight"], state["decoder.embed_tokens.weight"])
    assert torch.equal(ours["bart.model.decoder.layers.1.encoder_attn.q_proj.weight"], state["decoder.layers.1.encoder_attn.q_proj.weight"])
    # the folded weight norm equals torch's own weight-norm parametrisation of the same g and v
    conv = torch.nn.Conv1d(48, 48, 8, groups=4)
    conv = torch.nn.utils.parametrizations.weight_norm(conv, dim=2)
    conv.parametrizations.weight.original0.data = state["encoder.encoder.pos_conv.0.weight_g"]
    conv.parametrizations.weight.original1.data = state["encoder.encoder.pos_conv.0.weight_v"]
    torch.testing.assert_close(ours["encoder.encoder.pos_conv.weight"], conv.weight)

    for key in ("encoder.encoder.layers.2.fc1.bias", "postencoder.layers.1.conv_module.batch_norm.running_var",
                "encoder_embed_mlp.fc2.weight", "cross_embed_positions.weight", "final_logits_bias"):
        broken = dict(state)
        del broken[key]
        with pytest.raises(CheckpointMismatch, match="missing|has no"):
            load_state(_empty_model(checkpoint), broken)
    with pytest.raises(CheckpointMismatch, match="left over: encoder.extra"):
        load_state(_empty_model(checkpoint), {**state, "encoder.extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointMismatch, match="wrong shape"):
        load_state(_empty_model(checkpoint), {**state, "downsample_conv.bias": torch.zeros(7)})
    with pytest.raises(CheckpointMismatch, match="ties"):
        load_state(_empty_model(checkpoint), {**state, "lm_head.weight": torch.zeros_like(state["lm_head.weight"])})


# ---------------------------------------------------------------------------- BEATs pieces against their definitions
def test_relative_buckets_follow_the_bidirectional_log_scheme():
    from extract.models.beats_conformer_bart import relative_position_buckets

    buckets = relative_position_buckets(900, num_buckets=320, max_distance=800)
    for query, key in [(0, 0), (5, 0), (0, 5), (10, 90), (90, 10), (0, 79), (0, 80), (0, 500), (0, 899), (899, 0)]:
        distance, half, exact = key - query, 160, 80
        expected = (half if distance > 0 else 0) + (
            abs(distance) if abs(distance) < exact
            else min(half - 1, exact + int(np.log(abs(distance) / exact) / np.log(800 / exact) * (half - exact))))
        assert buckets[query, key] == expected, (query, key)


def test_gated_attention_matches_the_fp16_safe_formulation():
    """BEATs computes softmax((q k / 32 - max) * 32 + gate * bias) for fp16 safety; the SDPA path must agree."""
    from extract.models.beats_conformer_bart import GatedRelativeAttention

    torch.manual_seed(0)
    heads, dim, length = 4, 32, 11
    attention = GatedRelativeAttention(dim, heads, num_buckets=16).eval()
    torch.nn.init.normal_(attention.grep_a, 1.0, 0.3)
    x, bias = torch.randn(2, length, dim), torch.randn(heads, length, length)
    padding = torch.zeros(2, length, dtype=torch.bool)
    padding[1, 8:] = True

    q = attention.q_proj(x).view(2, length, heads, -1).transpose(1, 2)
    k = attention.k_proj(x).view(2, length, heads, -1).transpose(1, 2)
    v = attention.v_proj(x).view(2, length, heads, -1).transpose(1, 2)
    scores = (q * (dim // heads) ** -0.5 / 32) @ k.transpose(-1, -2)
    scores = (scores - scores.amax(dim=-1, keepdim=True)) * 32
    scores = scores.masked_fill(padding[:, None, None, :], float("-inf"))
    gate = torch.sigmoid(attention.grep_linear(q).view(2, heads, length, 2, 4).sum(-1))
    gate = gate[..., :1] * (gate[..., 1:] * attention.grep_a - 1.0) + 2.0
    reference = torch.softmax(scores + gate * bias, dim=-1) @ v
    reference = attention.out_proj(reference.transpose(1, 2).reshape(2, length, dim))
    with torch.no_grad():
        torch.testing.assert_close(attention(x, bias, padding), reference, atol=1e-5, rtol=1e-5)


def test_beats_input_is_the_fbank_of_the_int16_scaled_signal_normalised_as_beats_does():
    """BEATs.preprocess (model/BEATs.py): waveform * 2**15, Kaldi fbank, then (x - 15.41663) / (2 x 6.55582)."""
    from extract.models.beats_conformer_bart import normalised_fbank

    signal = SIGNAL / 2**15  # as decoded: floats in [-1, 1]
    expected = (reference_fbank(signal * 2**15) - 15.41663) / (2 * 6.55582)
    np.testing.assert_allclose(normalised_fbank(torch.from_numpy(signal)).numpy(), expected, atol=2e-3)
