"""Random-weight models for the benchmarks, built without a download.

- The heads' real architectures at full size (`llava_video`, `internvl`, `grounding_sam`), built
  from their published configurations and initialised in place on a device (bf16 on CUDA), with a
  processor whose image sizes and token counts match the real one and a small offline tokenizer
  carrying the model's special tokens. `layers` cuts the transformer depth for a quick check of
  the whole path on a small machine; benchmark numbers use full depth.
- A tiny LLaVA-Video saved with `save_pretrained`, for timing the pipeline around a model.
- The audio captioner at full size in its authors' release format (`released_layout` names every
  tensor as their modules do), read back by the head's own loader.
"""

from __future__ import annotations

from pathlib import Path

import torch

from extract.models.generation import QWEN_CHAT_TEMPLATE, qwen_chat_template

# Qwen2-7B, LLaVA-Video-7B-Qwen2's language model
QWEN2_7B = {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
            "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 32768,
            "rope_theta": 1000000.0, "tie_word_embeddings": False}
# Qwen3-8B, InternVL3.5-8B's language model
QWEN3_8B = {"model_type": "qwen3", "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
            "max_position_embeddings": 40960, "rope_theta": 1000000.0, "tie_word_embeddings": False}
# Swin-T at 224 with window 7, grounding-dino-tiny's backbone (GroundingDINO_SwinT_OGC)
SWIN_T_224 = {"model_type": "swin", "embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": 7,
              "image_size": 224, "out_features": ["stage2", "stage3", "stage4"]}
# SAM's image encoders: ViT-B (sam-vit-base) and ViT-H (sam-vit-huge)
SAM_VIT = {"base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "mlp_dim": 3072,
                    "global_attn_indexes": [2, 5, 8, 11]},
           "huge": {"hidden_size": 1280, "num_hidden_layers": 32, "num_attention_heads": 16, "mlp_dim": 5120,
                    "global_attn_indexes": [7, 15, 23, 31]}}


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


def llava_video_processor():
    """LLaVA-Video's processor at full size (SigLIP at 384, 729 tokens a frame before pooling) with a small tokenizer."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

    size = {"height": 384, "width": 384}
    pinpoints = LlavaOnevisionConfig().image_grid_pinpoints
    return LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, crop_size=size, image_grid_pinpoints=pinpoints),
        video_processor=LlavaOnevisionVideoProcessor(size=size, crop_size=size), tokenizer=tiny_tokenizer(), num_image_tokens=729,
        vision_feature_select_strategy="full", chat_template=QWEN_CHAT_TEMPLATE)


def llava_video_config(tokenizer, layers: int | None = None):
    """LLaVA-Video-7B-Qwen2's shape: SigLIP-so400m-384 (26 layers, as LLaVA keeps them) and Qwen2-7B."""
    from transformers import LlavaOnevisionConfig

    return LlavaOnevisionConfig(
        text_config=_shallow(QWEN2_7B, layers),
        vision_config={"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304, "patch_size": 14,
                       "image_size": 384, "num_hidden_layers": min(26, layers or 26), "num_attention_heads": 16, "vision_use_head": False},
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full", vision_feature_layer=-1)


def llava_video(device: torch.device, dtype: torch.dtype, attn_implementation: str, layers: int | None = None):
    """(processor, model): LLaVA-OneVision with SigLIP-so400m-384 (26 layers, as LLaVA uses it) and Qwen2-7B."""
    from transformers import LlavaOnevisionForConditionalGeneration

    processor = llava_video_processor()
    tokenizer = processor.tokenizer
    config = llava_video_config(tokenizer, layers)
    model = _build(LlavaOnevisionForConditionalGeneration, config, device, dtype, attn_implementation)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return processor, model


def internvl(device: torch.device, dtype: torch.dtype, attn_implementation: str, layers: int | None = None):
    """(processor, model): InternVL3.5-8B's shape, InternViT-300M-448 + Qwen3-8B, 256 tokens per tile."""
    from transformers import GotOcr2ImageProcessor, InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor, InternVLVideoProcessor

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


# Qwen3-VL-8B-Instruct (config.json and video_preprocessor_config.json of the release)
QWEN3_VL_8B_TEXT = {"hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36, "num_attention_heads": 32,
                    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "max_position_embeddings": 262144,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                                        "mrope_interleaved": True}}
QWEN3_VL_8B_VISION = {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16, "out_hidden_size": 4096,
                      "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2, "deepstack_visual_indexes": [8, 16, 24],
                      "num_position_embeddings": 2304}
QWEN3_VL_VIDEO = {"size": {"shortest_edge": 4096, "longest_edge": 25165824}, "fps": 2.0, "min_frames": 4, "max_frames": 768,
                  "do_sample_frames": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


def qwen3_vl(device: torch.device, dtype: torch.dtype, attn_implementation: str, layers: int | None = None):
    """(processor, model): Qwen3-VL-8B-Instruct's shape (its ViT with DeepStack, Qwen3-8B-like text), its video
    processor's settings, a small tokenizer with its special tokens."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor, Qwen3VLVideoProcessor

    tokenizer = tiny_tokenizer(QWEN_VL_TOKENS, QWEN_VL_CHAT_TEMPLATE)
    vision = _shallow(QWEN3_VL_8B_VISION, layers, "depth")
    vision["deepstack_visual_indexes"] = [i for i in vision["deepstack_visual_indexes"] if i < vision["depth"]]
    config = Qwen3VLConfig(text_config=_shallow(QWEN3_VL_8B_TEXT, layers), vision_config=vision, tie_word_embeddings=False,
                           **_qwen_vl_ids(tokenizer))
    model = _build(Qwen3VLForConditionalGeneration, config, device, dtype, attn_implementation)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    processor = Qwen3VLProcessor(image_processor=Qwen2VLImageProcessor(patch_size=16, image_mean=[0.5] * 3, image_std=[0.5] * 3),
                                 video_processor=Qwen3VLVideoProcessor(**QWEN3_VL_VIDEO), tokenizer=tokenizer,
                                 chat_template=QWEN_VL_CHAT_TEMPLATE)
    return processor, model


def grounding_sam(device: torch.device, dtype: torch.dtype, layers: int | None = None, sam: str = "huge"):
    """((processor, model), (processor, model)): grounding-dino-tiny (Swin-T, BERT-base) and SAM's ViT-H or ViT-B."""
    from transformers import (GroundingDinoConfig, GroundingDinoForObjectDetection, GroundingDinoImageProcessor,
                              GroundingDinoProcessor, SamConfig, SamImageProcessor, SamModel, SamProcessor)

    detector_config = GroundingDinoConfig(
        backbone_config={**SWIN_T_224, "depths": [min(d, layers or d) for d in SWIN_T_224["depths"]]},
        text_config={"model_type": "bert", "num_hidden_layers": min(12, layers or 12)},
        encoder_layers=min(6, layers or 6), decoder_layers=max(2, min(6, layers or 6)))
    detector = _build(GroundingDinoForObjectDetection, detector_config, device, dtype)
    vit = dict(SAM_VIT[sam])
    depth = min(vit["num_hidden_layers"], layers or vit["num_hidden_layers"])
    vit.update(num_hidden_layers=depth, global_attn_indexes=[i for i in vit["global_attn_indexes"] if i < depth] or [0])
    segmenter = _build(SamModel, SamConfig(vision_config=vit), device, dtype)
    detector_processor = GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(), tokenizer=tiny_bert_tokenizer())
    return (detector_processor, detector), (SamProcessor(image_processor=SamImageProcessor()), segmenter)


# ---------------------------------------------------------------------------- tokenizers and tiny models
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]


def tiny_tokenizer(extra_special_tokens: dict[str, str] | None = None, chat_template: str = QWEN_CHAT_TEMPLATE,
                   placeholders: bool = True):
    """A small byte-level BPE with Qwen's special tokens, trained offline on a few sentences; without the image and
    video placeholders when `placeholders` is false (as lmms-lab's LLaVA tokenizers are)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    corpus = ["The video lasts for 2.00 seconds, and 8 frames are uniformly sampled from it.",
              "These frames are located at 0.12s,0.38s. Please answer the following questions related to this video.",
              "Please describe this video in detail. A person walks a dog in the park on a sunny day.",
              "system user assistant You are a helpful assistant."]
    extra = extra_special_tokens if extra_special_tokens is not None else \
        ({"image_token": "<image>", "video_token": "<video>"} if placeholders else {})
    specials = [t for t in SPECIAL_TOKENS if placeholders or t not in ("<image>", "<video>")]
    specials += [t for t in extra.values() if t not in specials]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   padding_side="left", chat_template=chat_template, extra_special_tokens=extra)


def tiny_qwen2_text_config(tokenizer) -> dict:
    return {"model_type": "qwen2", "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}


def save_generative(model_class, config, tokenizer, folder: Path, seed: int) -> None:
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
        text_config=tiny_qwen2_text_config(tokenizer),
        vision_config={"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 40, "patch_size": 8,
                       "vision_use_head": False},  # LLaVA drops SigLIP's pooling head; 5x5 patches, odd as SigLIP's 27
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full", vision_feature_layer=-1,
        image_grid_pinpoints=[[40, 40], [40, 80], [80, 40], [80, 80]],
    )
    save_generative(LlavaOnevisionForConditionalGeneration, config, tokenizer, folder, seed)
    size = {"height": 40, "width": 40}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, crop_size=size, image_grid_pinpoints=config.image_grid_pinpoints),
        video_processor=LlavaOnevisionVideoProcessor(size=size, crop_size=size),
        tokenizer=tokenizer, num_image_tokens=25, vision_feature_select_strategy="full",
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    processor.save_pretrained(folder)
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
        text_config=tiny_qwen2_text_config(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), downsample_ratio=0.5,
    )
    save_generative(InternVLForConditionalGeneration, config, tokenizer, folder, seed)
    size = {"height": 32, "width": 32}
    InternVLProcessor(image_processor=GotOcr2ImageProcessor(size=size, crop_to_patches=False),
                      video_processor=InternVLVideoProcessor(size=size), tokenizer=tokenizer,
                      image_seq_length=4, chat_template=template).save_pretrained(folder)
    return folder


# Qwen2-VL's chat template as the Qwen2-VL, Qwen2.5-VL and Qwen3-VL instruct checkpoints ship it (chat_template.json)
QWEN_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_VL_TOKENS = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>", "vision_start_token": "<|vision_start|>",
                  "vision_end_token": "<|vision_end|>"}


def _qwen_vl_ids(tokenizer) -> dict:
    ids = tokenizer.convert_tokens_to_ids(list(QWEN_VL_TOKENS.values()))
    return dict(zip(["image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"], ids))


def save_tiny_qwen2_5_vl(folder: str | Path, seed: int = 0) -> Path:
    """Qwen2.5-VL (windowed ViT with 3D patches, multimodal rotary positions) at toy size, with its processor."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    folder = Path(folder)
    tokenizer = tiny_tokenizer(QWEN_VL_TOKENS, QWEN_VL_CHAT_TEMPLATE)
    text = {**tiny_qwen2_text_config(tokenizer), "model_type": "qwen2_5_vl_text",
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}}
    config = Qwen2_5_VLConfig(
        text_config=text, **_qwen_vl_ids(tokenizer),
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56,
                       "fullatt_block_indexes": [1]})
    save_generative(Qwen2_5_VLForConditionalGeneration, config, tokenizer, folder, seed)
    pixels = {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 16}  # 2x2 to 4x4 merged patches a frame
    Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**pixels),
                        video_processor=Qwen2VLVideoProcessor(**pixels, fps=2.0, do_sample_frames=True),
                        tokenizer=tokenizer, chat_template=QWEN_VL_CHAT_TEMPLATE).save_pretrained(folder)
    return folder


def save_tiny_qwen3_vl(folder: str | Path, seed: int = 0) -> Path:
    """Qwen3-VL (DeepStack features into the first layers, interleaved multimodal rotary positions, frame times in the
    prompt) at toy size, with its processor."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor, Qwen3VLVideoProcessor

    folder = Path(folder)
    tokenizer = tiny_tokenizer(QWEN_VL_TOKENS, QWEN_VL_CHAT_TEMPLATE)
    text = {**tiny_qwen2_text_config(tokenizer), "model_type": "qwen3_vl_text", "num_hidden_layers": 3, "head_dim": 16,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3], "mrope_interleaved": True}}
    config = Qwen3VLConfig(
        text_config=text, **_qwen_vl_ids(tokenizer),
        vision_config={"depth": 3, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
                       "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2, "deepstack_visual_indexes": [0, 1],
                       "num_position_embeddings": 64})
    save_generative(Qwen3VLForConditionalGeneration, config, tokenizer, folder, seed)
    size = {"shortest_edge": 32 * 32 * 4, "longest_edge": 32 * 32 * 16}
    Qwen3VLProcessor(image_processor=Qwen2VLImageProcessor(size=size, patch_size=16),
                     video_processor=Qwen3VLVideoProcessor(size=size, fps=2.0, do_sample_frames=True),
                     tokenizer=tokenizer, chat_template=QWEN_VL_CHAT_TEMPLATE).save_pretrained(folder)
    return folder


def save_tiny_vlm(family: str, folder: str | Path, seed: int = 0) -> Path:
    """A tiny random checkpoint of one of the video-language families vlm_caption is proven on, saved in `folder`."""
    return TINY_VLM_FAMILIES[family](folder, seed)


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


def released_layout(bart: dict, beats: dict, conformer: dict, vocab: int) -> dict[str, tuple]:
    """Every tensor of the released `pytorch_model.bin` and its shape, named as the authors' modules name
    them (BEATs' fairseq-style encoder, transformers 4.x Conformer and BART decoder), for any sizes."""
    d, e = beats["encoder_embed_dim"], beats["embed_dim"]
    heads, ffn, kernel = beats["encoder_attention_heads"], beats["encoder_ffn_embed_dim"], beats["conv_pos"]
    layout = {"encoder.patch_embedding.weight": (e, 1, 16, 16), "encoder.layer_norm.weight": (e,), "encoder.layer_norm.bias": (e,),
              "encoder.post_extract_proj.weight": (d, e), "encoder.post_extract_proj.bias": (d,),
              "encoder.encoder.pos_conv.0.bias": (d,), "encoder.encoder.pos_conv.0.weight_g": (1, 1, kernel),
              "encoder.encoder.pos_conv.0.weight_v": (d, d // beats["conv_pos_groups"], kernel),
              "encoder.encoder.layer_norm.weight": (d,), "encoder.encoder.layer_norm.bias": (d,),
              "encoder.predictor.weight": (beats["predictor_class"], d), "encoder.predictor.bias": (beats["predictor_class"],)}
    for i in range(beats["encoder_layers"]):
        p = f"encoder.encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            layout |= {f"{p}self_attn.{proj}.weight": (d, d), f"{p}self_attn.{proj}.bias": (d,)}
        layout |= {f"{p}self_attn.grep_linear.weight": (8, d // heads), f"{p}self_attn.grep_linear.bias": (8,),
                   f"{p}self_attn.grep_a": (1, heads, 1, 1),
                   f"{p}self_attn.relative_attention_bias.weight": (beats["num_buckets"], heads),  # shared, saved per layer
                   f"{p}self_attn_layer_norm.weight": (d,), f"{p}self_attn_layer_norm.bias": (d,),
                   f"{p}fc1.weight": (ffn, d), f"{p}fc1.bias": (ffn,), f"{p}fc2.weight": (d, ffn), f"{p}fc2.bias": (d,),
                   f"{p}final_layer_norm.weight": (d,), f"{p}final_layer_norm.bias": (d,)}
    layout |= {"downsample_conv.weight": (d, d, 4), "downsample_conv.bias": (d,)}

    c, inner, c_heads = conformer["hidden_size"], conformer["intermediate_size"], conformer["num_attention_heads"]
    c_kernel = conformer["num_conv_pos_embeddings"]
    layout |= {"postencoder.pos_conv_embed.conv.weight_g": (1, 1, c_kernel),
               "postencoder.pos_conv_embed.conv.weight_v": (c, c // conformer["num_conv_pos_embedding_groups"], c_kernel),
               "postencoder.pos_conv_embed.conv.bias": (c,), "postencoder.layer_norm.weight": (c,), "postencoder.layer_norm.bias": (c,)}
    for i in range(conformer.get("num_hidden_layers", 2)):
        p = f"postencoder.layers.{i}."
        for norm in ("ffn1_layer_norm", "self_attn_layer_norm", "conv_module.layer_norm", "ffn2_layer_norm", "final_layer_norm"):
            layout |= {f"{p}{norm}.weight": (c,), f"{p}{norm}.bias": (c,)}
        for ff in ("ffn1", "ffn2"):
            layout |= {f"{p}{ff}.intermediate_dense.weight": (inner, c), f"{p}{ff}.intermediate_dense.bias": (inner,),
                       f"{p}{ff}.output_dense.weight": (c, inner), f"{p}{ff}.output_dense.bias": (c,)}
        for proj in ("linear_q", "linear_k", "linear_v", "linear_out"):
            layout |= {f"{p}self_attn.{proj}.weight": (c, c), f"{p}self_attn.{proj}.bias": (c,)}
        layout |= {f"{p}self_attn.linear_pos.weight": (c, c), f"{p}self_attn.pos_bias_u": (c_heads, c // c_heads),
                   f"{p}self_attn.pos_bias_v": (c_heads, c // c_heads),
                   f"{p}conv_module.pointwise_conv1.weight": (2 * c, c, 1),
                   f"{p}conv_module.depthwise_conv.weight": (c, 1, conformer["conv_depthwise_kernel_size"]),
                   f"{p}conv_module.pointwise_conv2.weight": (c, c, 1)}
        layout |= {f"{p}conv_module.batch_norm.{name}": (c,) for name in ("weight", "bias", "running_mean", "running_var")}
        layout[f"{p}conv_module.batch_norm.num_batches_tracked"] = ()

    m, f = bart["d_model"], bart["decoder_ffn_dim"]
    layout |= {"cross_embed_positions.weight": (bart["max_cross_position_embeddings"] + 2, m),
               "decoder.embed_tokens.weight": (vocab, m), "decoder.embed_positions.weight": (bart["max_position_embeddings"] + 2, m),
               "decoder.layernorm_embedding.weight": (m,), "decoder.layernorm_embedding.bias": (m,),
               "final_logits_bias": (1, vocab), "lm_head.weight": (vocab, m)}
    for i in range(bart["decoder_layers"]):
        p = f"decoder.layers.{i}."
        for attention in ("self_attn", "encoder_attn"):
            for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
                layout |= {f"{p}{attention}.{proj}.weight": (m, m), f"{p}{attention}.{proj}.bias": (m,)}
            layout |= {f"{p}{attention}_layer_norm.weight": (m,), f"{p}{attention}_layer_norm.bias": (m,)}
        layout |= {f"{p}fc1.weight": (f, m), f"{p}fc1.bias": (f,), f"{p}fc2.weight": (m, f), f"{p}fc2.bias": (m,),
                   f"{p}final_layer_norm.weight": (m,), f"{p}final_layer_norm.bias": (m,)}
    hidden, out = bart["embed_predictor_ffn_dim"], bart["embed_predictor_out_dim"]
    layout |= {"encoder_embed_mlp.fc1.weight": (hidden, m), "encoder_embed_mlp.fc2.weight": (out, hidden),
               "encoder_embed_mlp.bn.num_batches_tracked": ()}
    layout |= {f"encoder_embed_mlp.bn.{name}": (hidden,) for name in ("weight", "bias", "running_mean", "running_var")}
    return layout


def random_released_state(layout: dict[str, tuple], seed: int = 0, scale: float = 0.3) -> dict:
    """Random tensors for a released layout: norms near 1, positive variances and gains, shared tensors shared."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in layout.items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(0)
        elif name.endswith(("running_var", "weight_g", "grep_a")) or ("norm" in name and name.endswith(".weight")) or ".bn.weight" in name:
            state[name] = 1 + 0.1 * torch.rand(shape, generator=generator)
        else:
            state[name] = scale * torch.randn(shape, generator=generator)
    state["lm_head.weight"] = state["decoder.embed_tokens.weight"]  # tied in the release
    for name in layout:
        if "relative_attention_bias" in name:
            state[name] = state["encoder.encoder.layers.0.self_attn.relative_attention_bias.weight"]
    return state


def word_tokenizer(size: int):
    """A word-level tokenizer of `size` made-up words with BART's special ids, to decode full-size random models."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["<s>", "<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(4, size)])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def save_random_audio_captioner(folder: str | Path, seed: int = 0) -> Path:
    """The released architecture at full size (BEATs iter3, 2-layer Conformer, 6-layer BART decoder, 50265
    tokens) with random weights, in the release's format, for benchmarks."""
    import json

    import torch

    from extract.models.beats_conformer_bart import BEATS_CONFIG, CONFORMER_CONFIG

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bart = {"d_model": 768, "decoder_layers": 6, "decoder_attention_heads": 16, "decoder_ffn_dim": 3072,
            "max_position_embeddings": 128, "max_cross_position_embeddings": 512, "encoder_repr_layer_idx": 10,
            "encoder_downsample_rate": 3, "embed_predictor_ffn_dim": 3072, "embed_predictor_out_dim": 768,
            "decoder_start_token_id": 2, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "vocab_size": 50265}
    (folder / "config.json").write_text(json.dumps({**bart, "model_type": "bart"}, indent=2))
    layout = released_layout(bart, BEATS_CONFIG, CONFORMER_CONFIG, bart["vocab_size"])
    torch.save(random_released_state(layout, seed, scale=0.02), folder / "pytorch_model.bin")
    word_tokenizer(bart["vocab_size"]).save_pretrained(folder)
    return folder


TINY_VLM_FAMILIES = {"qwen3_vl": save_tiny_qwen3_vl, "qwen2_5_vl": save_tiny_qwen2_5_vl,
                     "llava_onevision": save_tiny_llava_video, "internvl": save_tiny_internvl}
