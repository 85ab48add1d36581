"""grounding_sam with tiny random Grounding DINO and SAM saved and loaded by path, on CPU."""

import pytest
from pycocotools import mask as mask_utils

from conftest import compose_cfg, make_clip, read_records, write_shard
from extract.heads.grounding_sam import normalise_labels
from extract.runner import run
from tiny import save_tiny_grounding_dino, save_tiny_sam


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return save_tiny_grounding_dino(tmp_path_factory.mktemp("gd")), save_tiny_sam(tmp_path_factory.mktemp("sam"))


def _run(tmp_path, checkpoints, *extra):
    (tmp_path / "in").mkdir(exist_ok=True)
    write_shard(tmp_path / "in" / "a.tar", [("cam.1 (0-1).mp4", make_clip(size="160x120")), ("cam.2 (0-1).mp4", make_clip(size="96x64"))])
    cfg = compose_cfg("+model=grounding_sam", f"model.detector={checkpoints[0]}", f"model.segmenter={checkpoints[1]}",
                      f"tar_folder={tmp_path / 'in'}", f"output_dir={tmp_path / 'out'}", "num_workers=1", "batch_size=2",
                      "wandb.mode=disabled", "model.labels='Person. dog.  car'", *extra)
    run(cfg)
    return {r["member"]: r for r in read_records(tmp_path / "out" / "grounding_sam")}


def test_boxes_and_masks_per_keyframe(tmp_path, checkpoints):
    records = _run(tmp_path, checkpoints, "model.box_threshold=0.0", "model.text_threshold=0.0", "model.max_detections=3")
    for member, (width, height) in {"cam.1 (0-1).mp4": (160, 120), "cam.2 (0-1).mp4": (96, 64)}.items():
        record = records[member]
        assert record["status"] == "ok" and record["labels"] == "person. dog. car."
        assert len(record["keyframes"]) == 4 and record["num_detections"] == 12
        for keyframe in record["keyframes"]:
            assert (keyframe["width"], keyframe["height"]) == (width, height)
            for detection in keyframe["detections"]:
                x0, y0, x1, y1 = detection["box"]
                assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
                assert 0 <= detection["score"] <= 1 and isinstance(detection["label"], str)
                mask = mask_utils.decode({"size": detection["mask"]["size"], "counts": detection["mask"]["counts"].encode()})
                assert mask.shape == (height, width) and mask.sum() == detection["area"]


def test_no_detections_is_ok_with_empty_lists(tmp_path, checkpoints):
    records = _run(tmp_path, checkpoints, "model.box_threshold=1.01")
    for record in records.values():
        assert record["status"] == "ok" and record["num_detections"] == 0
        assert all(k["detections"] == [] for k in record["keyframes"])


def test_labels_are_normalised():
    assert normalise_labels("Person.  Red  CAR. dog") == "person. red car. dog."
    assert normalise_labels(["a cat", "Tree"]) == "a cat. tree."


def test_detections_are_the_best_scoring_of_the_full_post_processing(checkpoints):
    """The head post-processes only each frame's max_detections best queries: the same boxes, labels and scores
    as post-processing all of them and keeping the best."""
    import torch

    from conftest import ready
    from extract.decode import decode_media
    from extract.heads import Clip, build
    from extract.heads.grounding_sam import pad_images

    head = build("grounding_sam", {"detector": str(checkpoints[0]), "segmenter": str(checkpoints[1]), "box_threshold": 0.1,
                                   "text_threshold": 0.1, "max_detections": 3, "labels": "person. dog. car."})
    ready(head)
    clip = Clip("k", "v", 0.0, 1.0, decode_media(make_clip(size="160x120"), head.media_spec))
    prepared = head.prepare(clip)
    ours = head._detect([prepared])
    pixels, mask = pad_images(prepared["detector_pixels"])
    count = len(prepared["detector_pixels"])
    with torch.no_grad():
        outputs = head.detector(pixel_values=pixels, pixel_mask=mask, **{k: v.expand(count, -1) for k, v in head.text.items()})
    every = head.detector_processor.post_process_grounded_object_detection(
        outputs, head.text["input_ids"].expand(count, -1), threshold=0.1, text_threshold=0.1, target_sizes=prepared["sizes"])
    assert sum(len(found["scores"]) for found in every) > count * 3  # more boxes pass than are kept: the cut is tested
    for frame, found in zip(ours, every):
        order = found["scores"].argsort(descending=True)[:3].tolist()
        assert [d["label"] for d in frame] == [found["text_labels"][i] for i in order]
        assert [d["score"] for d in frame] == [round(float(found["scores"][i]), 4) for i in order]


def test_sam_is_prompted_with_the_boxes_samprocessor_makes_of_them(checkpoints):
    """Boxes in a frame's pixels reach SAM as transformers' SamProcessor scales them for its resized input (by the long
    side), on frames that are not square, wide and tall."""
    import numpy as np
    import torch

    from conftest import ready
    from extract.decode import decode_media
    from extract.heads import Clip, build

    head = ready(build("grounding_sam", {"detector": str(checkpoints[0]), "segmenter": str(checkpoints[1])}))
    for size in ("160x120", "64x112"):
        clip = Clip("k", "v", 0.0, 1.0, decode_media(make_clip(size=size), head.media_spec))
        prepared = head.prepare(clip)
        height, width = prepared["sizes"][0]
        boxes = [[4.0, 6.0, width - 10.0, height / 2], [width / 3, 2.0, width - 1.0, height - 3.0]]
        detections = [[{"label": "dog", "score": 0.9, "box": box} for box in boxes]] + [[] for _ in prepared["sizes"][1:]]
        seen = []
        hook = head.sam.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["input_boxes"].float().cpu()),
                                                  with_kwargs=True)
        try:
            head._segment([prepared], detections)
        finally:
            hook.remove()
        frame = np.asarray(clip.media.frames[0])
        expected = head.sam_processor(images=frame, input_boxes=[boxes], return_tensors="pt")["input_boxes"]
        torch.testing.assert_close(seen[0], expected.float(), atol=1e-4, rtol=0)


def test_each_keyframes_masks_come_from_its_own_image_and_sizes_are_height_width(checkpoints):
    import torch

    from conftest import ready
    from extract.decode import decode_media
    from extract.heads import Clip, build
    from extract.heads.grounding_sam import _unpadded

    mask = torch.zeros(1, 70, 90, dtype=torch.long)
    mask[0, :30, :50] = 1
    assert _unpadded({"pixel_mask": mask}) == [(30, 50)]  # (height, width) of the image inside the padding

    head = ready(build("grounding_sam", {"detector": str(checkpoints[0]), "segmenter": str(checkpoints[1])}))
    clip = Clip("k", "v", 0.0, 1.0, decode_media(make_clip(size="160x120", pattern="testsrc2"), head.media_spec))
    prepared = head.prepare(clip)
    box = [{"label": "dog", "score": 0.9, "box": [10.0, 10.0, 120.0, 90.0]}]
    seen = []
    hook = head.sam.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["image_embeddings"].clone()),
                                              with_kwargs=True)
    try:
        head._segment([prepared], [box] * len(prepared["sizes"]))
    finally:
        hook.remove()
    with torch.no_grad():
        own = head.sam.get_image_embeddings(prepared["sam_pixels"])
    assert len(seen) == len(prepared["sizes"]) == 4
    scale = own.abs().max()  # a tiny random SAM's embeddings are tiny: compare relative to their size
    for index, embedding in enumerate(seen):
        assert (embedding[0] - own[index]).abs().max() <= 1e-4 * scale
    assert (own[0] - own[-1]).abs().max() > 1e-2 * scale  # the keyframes differ: a first-keyframe-only mask would show
