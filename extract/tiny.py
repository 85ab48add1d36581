"""Tiny randomly initialised checkpoints, saved in the same format as the real ones.

No weights can be downloaded in tests or CI, so each model head is exercised end to end with a
tiny model of the real architecture, written with `save_pretrained` and read back by the head
through the same `from_pretrained` path a real checkpoint takes.
"""

from __future__ import annotations

from pathlib import Path

from extract.generation import QWEN_CHAT_TEMPLATE, qwen_chat_template

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]


def tiny_tokenizer(extra_special_tokens: dict[str, str] | None = None, chat_template: str = QWEN_CHAT_TEMPLATE):
    """A small byte-level BPE with Qwen's special tokens, trained offline on a few sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    corpus = ["The video lasts for 2.00 seconds, and 8 frames are uniformly sampled from it.",
              "These frames are located at 0.12s,0.38s. Please answer the following questions related to this video.",
              "Please describe this video in detail. A person walks a dog in the park on a sunny day.",
              "system user assistant You are a helpful assistant."]
    extra = extra_special_tokens or {"image_token": "<image>", "video_token": "<video>"}
    specials = SPECIAL_TOKENS + [t for t in extra.values() if t not in SPECIAL_TOKENS]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   padding_side="left", chat_template=chat_template, extra_special_tokens=extra)


def _tiny_qwen2_text_config(tokenizer) -> dict:
    return {"model_type": "qwen2", "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}


def _save_generative(model_class, config, tokenizer, folder: Path, seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    model = model_class(config).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)


def save_tiny_llava_video(folder: str | Path, seed: int = 0) -> Path:
    """LLaVA-OneVision (Qwen2 text + SigLIP vision) at toy size, with its processor, in `folder`."""
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, LlavaOnevisionImageProcessor,
                              LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor)

    folder = Path(folder)
    tokenizer = tiny_tokenizer()
    config = LlavaOnevisionConfig(
        text_config=_tiny_qwen2_text_config(tokenizer),
        vision_config={"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
                       "vision_use_head": False},  # LLaVA drops SigLIP's pooling head
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full", vision_feature_layer=-1,
        image_grid_pinpoints=[[32, 32], [32, 64], [64, 32], [64, 64]],
    )
    _save_generative(LlavaOnevisionForConditionalGeneration, config, tokenizer, folder, seed)
    size = {"height": 32, "width": 32}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, crop_size=size, image_grid_pinpoints=config.image_grid_pinpoints),
        video_processor=LlavaOnevisionVideoProcessor(size=size, crop_size=size),
        tokenizer=tokenizer, num_image_tokens=16, vision_feature_select_strategy="full",
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    processor.save_pretrained(folder)
    return folder


LABEL_WORDS = ["person", "face", "hand", "car", "animal", "dog", "cat", "bird", "building", "tree", "sky", "text",
               "screen", "food", "vehicle", "ball", "table", "chair", "water", "road", "a", "the"]


def tiny_bert_tokenizer():
    """A BERT WordPiece tokenizer whose special tokens sit at BERT's own ids (Grounding DINO relies on
    [CLS]=101, [SEP]=102, '.'=1012 and '?'=1029)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    vocab = [f"[unused{i}]" for i in range(1100)]
    for index, token in {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]", 1012: ".", 1029: "?"}.items():
        vocab[index] = token
    for index, word in enumerate(LABEL_WORDS, start=1030):
        vocab[index] = word
    tokenizer = Tokenizer(models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 101), ("[SEP]", 102)])
    tokenizer.decoder = decoders.WordPiece()
    return BertTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                             cls_token="[CLS]", mask_token="[MASK]")


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


def save_tiny_internvl(folder: str | Path, seed: int = 0) -> Path:
    """Native-transformers InternVL (InternViT-style vision + Qwen2 text) at toy size, with its processor."""
    from transformers import GotOcr2ImageProcessor, InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor, InternVLVideoProcessor

    folder = Path(folder)
    template = qwen_chat_template("<IMG_CONTEXT>")
    tokenizer = tiny_tokenizer({"start_image_token": "<img>", "end_image_token": "</img>",
                                "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}, template)
    config = InternVLConfig(
        vision_config={"model_type": "internvl_vision", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": [32, 32], "patch_size": [8, 8]},
        text_config=_tiny_qwen2_text_config(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), downsample_ratio=0.5,
    )
    _save_generative(InternVLForConditionalGeneration, config, tokenizer, folder, seed)
    size = {"height": 32, "width": 32}
    InternVLProcessor(image_processor=GotOcr2ImageProcessor(size=size, crop_to_patches=False),
                      video_processor=InternVLVideoProcessor(size=size), tokenizer=tokenizer,
                      image_seq_length=4, chat_template=template).save_pretrained(folder)
    return folder
