"""Tiny randomly initialised checkpoints for the tests, saved in the same format as the real ones.

No weights can be downloaded in tests or CI, so each model head is exercised end to end with a
tiny model of the real architecture, written with `save_pretrained` (or, for the audio captioner,
in its authors' release format) and read back through the same path a real checkpoint takes.
"""

from __future__ import annotations

from pathlib import Path

from extract.models.random_models import (released_layout, random_released_state, save_tiny_internvl, save_tiny_llava_video,
                                          tiny_bert_tokenizer)

__all__ = ["save_tiny_llava_video", "save_tiny_grounding_dino", "save_tiny_sam", "save_tiny_internvl", "save_tiny_audio_captioner",
           "TINY_CAPTIONER", "tiny_bart_tokenizer", "released_layout", "random_released_state"]


def save_tiny_grounding_dino(folder: str | Path, seed: int = 0) -> Path:
    import torch
    from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection, GroundingDinoImageProcessor, GroundingDinoProcessor

    folder = Path(folder)
    tokenizer = tiny_bert_tokenizer()
    config = GroundingDinoConfig(
        backbone_config={"model_type": "swin", "embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2],
                         "window_size": 4, "image_size": 64, "out_features": ["stage2", "stage3", "stage4"]},
        text_config={"model_type": "bert", "vocab_size": 1100, "hidden_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64},
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=30, max_text_len=64, num_feature_levels=4,
        encoder_n_points=2, decoder_n_points=2,
    )
    torch.manual_seed(seed)
    GroundingDinoForObjectDetection(config).eval().save_pretrained(folder)
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}), tokenizer=tokenizer)
    processor.save_pretrained(folder)
    return folder


def save_tiny_sam(folder: str | Path, seed: int = 0) -> Path:
    import torch
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    folder = Path(folder)
    config = SamConfig(
        vision_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 64,
                       "patch_size": 8, "output_channels": 16, "mlp_dim": 64, "global_attn_indexes": [1], "num_pos_feats": 8,
                       "window_size": 4},
        prompt_encoder_config={"hidden_size": 16, "image_size": 64, "patch_size": 8, "image_embedding_size": 8,
                               "mask_input_channels": 4},
        mask_decoder_config={"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_dim": 32,
                             "iou_head_hidden_dim": 16, "iou_head_depth": 2},
    )
    torch.manual_seed(seed)
    SamModel(config).eval().save_pretrained(folder)
    SamProcessor(image_processor=SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})).save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------- BEATs-Conformer-BART
TINY_CAPTIONER = {
    "bart": {"d_model": 48, "decoder_layers": 2, "decoder_attention_heads": 4, "decoder_ffn_dim": 64,
             "max_position_embeddings": 128, "max_cross_position_embeddings": 512, "encoder_repr_layer_idx": 2,
             "encoder_downsample_rate": 3, "use_conv_downsample": True, "embed_predictor_ffn_dim": 32,
             "embed_predictor_out_dim": 16, "decoder_start_token_id": 2, "pad_token_id": 1, "bos_token_id": 0,
             "eos_token_id": 2},
    "beats_config": {"embed_dim": 32, "encoder_layers": 3, "encoder_embed_dim": 48, "encoder_ffn_embed_dim": 64,
                     "encoder_attention_heads": 4, "conv_pos": 8, "conv_pos_groups": 4, "num_buckets": 16,
                     "max_distance": 40, "predictor_class": 5},
    "conformer_config": {"hidden_size": 48, "intermediate_size": 64, "num_attention_heads": 4, "num_conv_pos_embeddings": 8,
                         "num_conv_pos_embedding_groups": 4, "conv_depthwise_kernel_size": 5},
}


def tiny_bart_tokenizer():
    """A byte-level BPE with BART's special tokens at BART's ids (<s>=0, <pad>=1, </s>=2, <unk>=3)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    corpus = ["a dog barks while birds chirp in the background", "rain falls on a metal roof as thunder rumbles",
              "a car engine starts and drives away on a wet road", "people talk and laugh in a crowded room"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>")


def save_tiny_audio_captioner(folder: str | Path, seed: int = 0) -> Path:
    """A tiny BEATs-Conformer-BART as the authors release theirs: config.json (a BartConfig with the
    captioner's fields) and pytorch_model.bin under their key names; plus a tokenizer in the same folder."""
    import json

    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_bart_tokenizer()
    tokenizer.save_pretrained(folder)
    config = {**TINY_CAPTIONER["bart"], "vocab_size": len(tokenizer), "model_type": "bart",
              "beats_config": TINY_CAPTIONER["beats_config"], "conformer_config": TINY_CAPTIONER["conformer_config"]}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    layout = released_layout(TINY_CAPTIONER["bart"], {**_beats_defaults(), **TINY_CAPTIONER["beats_config"]},
                             {"num_hidden_layers": 2, **TINY_CAPTIONER["conformer_config"]}, len(tokenizer))
    torch.save(random_released_state(layout, seed), folder / "pytorch_model.bin")
    return folder


def _beats_defaults() -> dict:
    from extract.models.beats_conformer_bart import BEATS_CONFIG

    return BEATS_CONFIG
