"""The model heads' real architectures at full size with random weights, built on a device, for benchmarks.

No weights are downloaded: each model is built from its published configuration and initialised
in place (bf16 on CUDA), with a processor whose image sizes and token counts match the real one
and a small offline tokenizer carrying the model's special tokens. `layers` cuts the transformer
depth for a quick check of the whole path on a small machine; benchmark numbers use full depth.
"""

from __future__ import annotations

import torch

# Qwen2-7B, LLaVA-Video-7B-Qwen2's language model
QWEN2_7B = {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
            "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 32768,
            "rope_theta": 1000000.0, "tie_word_embeddings": False}
# Qwen3-8B, InternVL3.5-8B's language model
QWEN3_8B = {"model_type": "qwen3", "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
            "max_position_embeddings": 40960, "rope_theta": 1000000.0, "tie_word_embeddings": False}
# Swin-B at 384 with window 12, grounding-dino-base's backbone
SWIN_B_384 = {"model_type": "swin", "embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32], "window_size": 12,
              "image_size": 384, "out_features": ["stage2", "stage3", "stage4"]}


def _shallow(config: dict, layers: int | None, key: str = "num_hidden_layers") -> dict:
    return {**config, key: min(config[key], layers)} if layers else config


def _build(model_class, config, device: torch.device, dtype: torch.dtype, attn_implementation: str | None = None):
    torch.manual_seed(0)
    if attn_implementation:
        config._attn_implementation = attn_implementation
    with torch.device(device):
        model = model_class._from_config(config, dtype=dtype)
    # some modules build parameters with the legacy torch.Tensor(...), which ignores the device context
    return model.to(device).eval()


def llava_video(device: torch.device, dtype: torch.dtype, attn_implementation: str, layers: int | None = None):
    """(processor, model): LLaVA-OneVision with SigLIP-so400m-384 (26 layers, as LLaVA uses it) and Qwen2-7B."""
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, LlavaOnevisionImageProcessor,
                              LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor)

    from extract.generation import QWEN_CHAT_TEMPLATE
    from extract.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = LlavaOnevisionConfig(
        text_config=_shallow(QWEN2_7B, layers),
        vision_config={"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304, "patch_size": 14,
                       "image_size": 384, "num_hidden_layers": min(26, layers or 26), "num_attention_heads": 16, "vision_use_head": False},
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), video_token_index=tokenizer.convert_tokens_to_ids("<video>"))
    model = _build(LlavaOnevisionForConditionalGeneration, config, device, dtype, attn_implementation)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    size = {"height": 384, "width": 384}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, crop_size=size, image_grid_pinpoints=config.image_grid_pinpoints),
        video_processor=LlavaOnevisionVideoProcessor(size=size, crop_size=size), tokenizer=tokenizer, num_image_tokens=729,
        vision_feature_select_strategy="full", chat_template=QWEN_CHAT_TEMPLATE)
    return processor, model


def internvl(device: torch.device, dtype: torch.dtype, attn_implementation: str, layers: int | None = None):
    """(processor, model): InternVL3.5-8B's shape, InternViT-300M-448 + Qwen3-8B, 256 tokens per tile."""
    from transformers import GotOcr2ImageProcessor, InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor, InternVLVideoProcessor

    from extract.generation import qwen_chat_template
    from extract.tiny import tiny_tokenizer

    template = qwen_chat_template("<IMG_CONTEXT>")
    tokenizer = tiny_tokenizer({"start_image_token": "<img>", "end_image_token": "</img>",
                                "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}, template)
    config = InternVLConfig(vision_config={"model_type": "internvl_vision", "num_hidden_layers": min(24, layers or 24)},
                            text_config=_shallow(QWEN3_8B, layers), image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
                            tie_word_embeddings=False)
    model = _build(InternVLForConditionalGeneration, config, device, dtype, attn_implementation)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    size = {"height": 448, "width": 448}
    processor = InternVLProcessor(image_processor=GotOcr2ImageProcessor(size=size, crop_to_patches=False),
                                  video_processor=InternVLVideoProcessor(size=size), tokenizer=tokenizer, image_seq_length=256,
                                  chat_template=template)
    return processor, model


def grounding_sam(device: torch.device, dtype: torch.dtype, layers: int | None = None):
    """((processor, model), (processor, model)): grounding-dino-base (Swin-B, BERT-base) and sam-vit-base."""
    from transformers import (GroundingDinoConfig, GroundingDinoForObjectDetection, GroundingDinoImageProcessor,
                              GroundingDinoProcessor, SamConfig, SamImageProcessor, SamModel, SamProcessor)

    from extract.tiny import tiny_bert_tokenizer

    detector_config = GroundingDinoConfig(
        backbone_config={**SWIN_B_384, "depths": [min(d, layers or d) for d in SWIN_B_384["depths"]]},
        text_config={"model_type": "bert", "num_hidden_layers": min(12, layers or 12)},
        encoder_layers=min(6, layers or 6), decoder_layers=max(2, min(6, layers or 6)))
    detector = _build(GroundingDinoForObjectDetection, detector_config, device, dtype)
    segmenter_config = SamConfig(vision_config={"num_hidden_layers": min(12, layers or 12),
                                                "global_attn_indexes": [i for i in (2, 5, 8, 11) if i < min(12, layers or 12)] or [0]})
    segmenter = _build(SamModel, segmenter_config, device, dtype)
    detector_processor = GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(), tokenizer=tiny_bert_tokenizer())
    return (detector_processor, detector), (SamProcessor(image_processor=SamImageProcessor()), segmenter)
