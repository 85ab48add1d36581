"""internvl against its authors' code (OpenGVLab/InternVL README: load_image, dynamic_preprocess, build_transform,
get_index; internvl_chat/internvl/conversation.py: the internvl2_5 template), each written here from theirs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_clip, ready
from extract.decode import MediaSpec, decode_media, sample_indices
from extract.heads import Clip, build
from extract.heads.internvl import SYSTEM, tiles_of, tile_grid
from tiny import save_tiny_internvl


def _authors_grid(orig_width: int, orig_height: int, max_num: int, image_size: int) -> tuple[int, int]:
    """dynamic_preprocess's target ratios and find_closest_aspect_ratio, from the README."""
    aspect_ratio = orig_width / orig_height
    target_ratios = set((i, j) for n in range(1, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1)
                        if i * j <= max_num and i * j >= 1)
    target_ratios = sorted(target_ratios, key=lambda x: x[0] * x[1])
    best_ratio_diff, best_ratio, area = float("inf"), (1, 1), orig_width * orig_height
    for ratio in target_ratios:
        ratio_diff = abs(aspect_ratio - ratio[0] / ratio[1])
        if ratio_diff < best_ratio_diff:
            best_ratio_diff, best_ratio = ratio_diff, ratio
        elif ratio_diff == best_ratio_diff and area > 0.5 * image_size * image_size * ratio[0] * ratio[1]:
            best_ratio = ratio
    return best_ratio


def _authors_tiles(image: Image.Image, max_num: int, image_size: int) -> list[Image.Image]:
    """dynamic_preprocess(image, image_size=..., use_thumbnail=True, max_num=...) from the README."""
    best_ratio = _authors_grid(*image.size, max_num, image_size)
    target_width, target_height = image_size * best_ratio[0], image_size * best_ratio[1]
    blocks = best_ratio[0] * best_ratio[1]
    resized_img = image.resize((target_width, target_height))
    processed = []
    for i in range(blocks):
        box = ((i % (target_width // image_size)) * image_size, (i // (target_width // image_size)) * image_size,
               ((i % (target_width // image_size)) + 1) * image_size, ((i // (target_width // image_size)) + 1) * image_size)
        processed.append(resized_img.crop(box))
    if len(processed) != 1:
        processed.append(image.resize((image_size, image_size)))
    return processed


@pytest.mark.parametrize("width, height, max_tiles", [(640, 360, 12), (360, 640, 12), (1920, 1080, 12), (1000, 120, 12),
                                                      (448, 448, 12), (900, 500, 6), (640, 360, 1)])
def test_tiles_are_dynamic_preprocess(width, height, max_tiles):
    rng = np.random.default_rng(width + height)
    # smooth content, as frames are: resampling filters agree on it to a level or two
    x, y = np.meshgrid(np.linspace(0, 6, width), np.linspace(0, 4, height))
    frame = np.stack([127 + 100 * np.sin(x + c) * np.cos(y - c) for c in range(3)], axis=-1)
    frame = np.clip(frame + rng.normal(0, 2, frame.shape), 0, 255).astype(np.uint8)
    theirs = [np.asarray(tile) for tile in _authors_tiles(Image.fromarray(frame), max_tiles, 448)]
    ours = tiles_of(torch.from_numpy(frame), max_tiles).numpy()
    assert len(ours) == len(theirs)
    difference = np.abs(ours.astype(int) - np.stack(theirs).astype(int))
    assert difference.max() <= 3 and difference.mean() < 0.5


def test_normalisation_is_build_transform():
    import torchvision.transforms as T

    head = build("internvl", {"checkpoint": "unused"})
    head.dtype = torch.float32
    tile = torch.randint(0, 256, (448, 448, 3), dtype=torch.uint8)
    transform = T.Compose([T.ToTensor(), T.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))])
    torch.testing.assert_close(head.pixel_values(tile[None])[0], transform(Image.fromarray(tile.numpy())), atol=1e-6, rtol=0)


@pytest.mark.parametrize("total, count", [(24, 4), (100, 8), (7, 4), (300, 32)])
def test_keyframes_are_get_index(total, count):
    """get_index(bound=None, fps, max_frame=total - 1, first_idx=0, num_segments=count) from the README."""
    start_idx, end_idx = max(0, round(-100000 * 30)), min(round(100000 * 30), total - 1)
    seg_size = float(end_idx - start_idx) / count
    theirs = [int(start_idx + (seg_size / 2) + np.round(seg_size * idx)) for idx in range(count)]
    assert sample_indices("segments", total, count) == theirs
    if total == 24:
        media = decode_media(make_clip(seconds=2, rate=12, tone=None, fmt="matroska"), MediaSpec(num_frames=count, sampling="segments"))
        assert media.frame_indices == theirs


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_internvl(tmp_path_factory.mktemp("tiny-internvl"))


def test_the_prompt_is_the_internvl2_5_conversation(checkpoint):
    """model.chat: '<image>\\n' + question in the internvl2_5 template (MPT separators), '<image>' replaced by
    <img> + <IMG_CONTEXT> x num_image_token x tiles + </img>."""
    head = ready(build("internvl", {"checkpoint": str(checkpoint), "max_tiles": 6, "prompt": "What is here?"}))
    roles, sep = ("<|im_start|>user\n", "<|im_start|>assistant\n"), "<|im_end|>\n"
    theirs = "<|im_start|>system\n" + SYSTEM + sep + roles[0] + "<image>\nWhat is here?" + sep + roles[1]
    theirs = theirs.replace("<image>", "<img>" + "<IMG_CONTEXT>" * (4 * 3) + "</img>", 1)  # 4 tokens a tiny tile, 3 tiles
    assert head.prompt_for(3) == theirs
    clip = Clip("k", "v", 0.0, 1.0, decode_media(make_clip(seconds=1, size="96x48"), head.media_spec))
    prepared = head.prepare(clip)
    assert all((ids == head.image_token).sum() == 4 * n for ids, n in zip(prepared["input_ids"], prepared["tiles"]))
    assert prepared["tiles"] == [3] * 4  # 96x48: two tiles side by side, and the thumbnail


def test_internvl2_checkpoints_get_their_own_template(checkpoint):
    """InternVL2 was trained with internlm2-chat: its system message, and `<|im_end|>` with no line break after it."""
    from extract.heads.internvl import SYSTEM_V2

    head = ready(build("internvl", {"checkpoint": str(checkpoint), "max_tiles": 1, "prompt": "Q?"}))
    head.template = "internlm2-chat"  # what a folder from `extract.convert internvl2` declares
    image = "<img>" + "<IMG_CONTEXT>" * 4 + "</img>"
    assert head.prompt_for(1) == (f"<|im_start|>system\n{SYSTEM_V2}<|im_end|><|im_start|>user\n{image}\nQ?<|im_end|>"
                                  "<|im_start|>assistant\n")


@pytest.mark.parametrize("width, height", [(600, 600), (1000, 1000), (2000, 2000), (1792, 1344), (1344, 1792), (640, 360),
                                           (300, 900), (5000, 400), (448, 224), (700, 700)])
@pytest.mark.parametrize("max_tiles", [12, 6, 4, 1])
def test_the_tile_grid_is_find_closest_aspect_ratios(width, height, max_tiles):
    """Ties between grids of one aspect (1x1, 2x2, 3x3 for a square) go to the larger grid only for a large enough
    image; a 4x3 grid of exactly 12 tiles is allowed under max_num=12."""
    assert tile_grid(width, height, max_tiles) == _authors_grid(width, height, max_tiles, 448)


def test_the_head_takes_get_index_keyframes_and_the_authors_tiles():
    from extract.heads import build
    from extract.heads.internvl import PRESETS

    assert PRESETS["authors"]["max_tiles"] == 12 and PRESETS["authors"]["max_new_tokens"] == 1024  # load_image(max_num=12)
    head = build("internvl", {"checkpoint": "unused", "num_keyframes": 4})
    media = decode_media(make_clip(seconds=2, rate=12, tone=None, fmt="matroska"), head.media_spec)
    seg_size = 23 / 4  # get_index over 24 frames
    assert media.frame_indices == [int(seg_size / 2 + np.round(seg_size * i)) for i in range(4)]
