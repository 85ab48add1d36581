"""grounding_sam: open-vocabulary boxes (Grounding DINO) and their masks (SAM) on keyframes.

As in transformers' Grounding DINO + SAM recipe: the detector finds boxes for the text queries,
then SAM is prompted with those boxes. Both processors (resizing, normalising) run in the
workers; SAM's prompts need the detector's boxes, so that part stays in the model step. Masks
are written as COCO RLE (pycocotools).
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np
import torch

from extract.decode import MediaSpec
from extract.heads import Clip, Head, Result, load_model, load_processor, register, resolve_dtype, with_preset


def normalise_labels(labels: str | list[str]) -> str:
    """Grounding DINO's query format: lowercase phrases, each ending with a period."""
    phrases = labels if isinstance(labels, (list, tuple)) else str(labels).split(".")
    phrases = [" ".join(p.lower().split()) for p in phrases]
    return " ".join(f"{p}." for p in phrases if p)


def encode_mask(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


class Mask(TypedDict):
    size: list[int]  # [height, width]
    counts: str  # COCO RLE, compressed


class Detection(TypedDict):
    label: str
    score: float
    box: list[float]  # x0, y0, x1, y1 in the frame's pixels
    mask: Mask
    area: int  # pixels in the mask


class Keyframe(TypedDict):
    time: float  # presentation time (s)
    width: int
    height: int
    detections: list[Detection]


# Grounded-Segment-Anything's grounded_sam_demo.py: --box_threshold 0.3, --text_threshold 0.25, float32 throughout,
# every box over the threshold; its README runs GroundingDINO_SwinT_OGC with sam_vit_h (--sam_version default vit_h)
PRESETS = {
    "authors": {"detector": "IDEA-Research/grounding-dino-tiny", "segmenter": "facebook/sam-vit-huge", "dtype": "float32",
                "box_threshold": 0.3, "text_threshold": 0.25, "max_detections": None},
    # SAM ViT-B (94 M parameters) for ViT-H (641 M), bfloat16, at most 20 boxes a keyframe: masks a little coarser,
    # crowded frames cut to their 20 best boxes
    "fast": {"detector": "IDEA-Research/grounding-dino-tiny", "segmenter": "facebook/sam-vit-base", "dtype": "bfloat16",
             "box_threshold": 0.3, "text_threshold": 0.25, "max_detections": 20},
}


@register
class GroundingSam(Head):
    name = "grounding_sam"
    requires = ("transformers", "pycocotools")
    fields = {"labels": str, "keyframes": list[Keyframe], "num_detections": int, "preset": str}
    frames_in_model_step = False

    def __init__(self, preset: str = "authors", detector: str | None = None, segmenter: str | None = None,
                 labels: str = "person. face. hand. animal. vehicle. building. text.", box_threshold: float | None = None,
                 text_threshold: float | None = None, num_keyframes: int = 4, max_detections: int | None = None,
                 dtype: str | None = None):
        options = with_preset(self.name, PRESETS, preset, {"detector": detector, "segmenter": segmenter, "dtype": dtype,
                                                            "box_threshold": box_threshold, "text_threshold": text_threshold,
                                                            "max_detections": max_detections})
        self.preset, self.detector_id, self.segmenter_id = preset, options["detector"], options["segmenter"]
        self.model_id = f"{self.detector_id} + {self.segmenter_id}"
        self.labels = normalise_labels(labels)
        self.box_threshold, self.text_threshold = options["box_threshold"], options["text_threshold"]
        self.max_detections, self.dtype_name = options["max_detections"], options["dtype"]
        self.media_spec = MediaSpec(num_frames=num_keyframes)  # full resolution: boxes are in the frame's pixels

    def open(self, device: torch.device) -> None:
        from transformers import SamProcessor

        self._use_processors(load_processor(self.detector_id, option="model.grounding_sam.detector"), load_processor(self.segmenter_id, processor_class=SamProcessor,
                                                                              option="model.grounding_sam.segmenter"),
                             resolve_dtype(self.dtype_name, device))

    def load(self, device: torch.device) -> None:
        from transformers import GroundingDinoForObjectDetection, SamModel

        self.detector = load_model(GroundingDinoForObjectDetection, self.detector_id, device, self.dtype, option="model.grounding_sam.detector")
        self.sam = load_model(SamModel, self.segmenter_id, device, self.dtype, option="model.grounding_sam.segmenter")
        self.device = device

    def attach(self, detector: tuple, segmenter: tuple, device: torch.device) -> None:
        """Use these (processor, model) pairs (benchmarks attach full-size random ones built on the device)."""
        self._use_processors(detector[0], segmenter[0], detector[1].dtype)
        self.detector, self.sam, self.device = detector[1], segmenter[1], device

    def _use_processors(self, detector_processor, sam_processor, dtype: torch.dtype) -> None:
        self.detector_processor, self.sam_processor, self.dtype = detector_processor, sam_processor, dtype
        self.text = self.detector_processor.tokenizer([self.labels], return_tensors="pt")

    def prepare(self, clip: Clip) -> dict:
        """In a worker: both models' pixels for every keyframe, in the model's dtype."""
        frames = list(np.asarray(clip.media.frames))
        detector = self.detector_processor.image_processor(frames, return_tensors="pt")
        sam = self.sam_processor(images=frames, return_tensors="pt")
        sizes = [frame.shape[:2] for frame in frames]
        return {"detector_pixels": [p[:, : h, : w].to(self.dtype) for p, (h, w) in zip(detector["pixel_values"], _unpadded(detector))],
                "sam_pixels": sam["pixel_values"].to(self.dtype), "original_sizes": sam["original_sizes"],
                "reshaped_input_sizes": sam["reshaped_input_sizes"], "sizes": sizes, "frame_times": clip.media.frame_times}

    def infer(self, clips: list[Clip]) -> list[Result]:
        prepared = [clip.prepared if clip.prepared is not None else self.prepare(clip) for clip in clips]
        detections = self._detect(prepared)
        masks = self._segment(prepared, detections)
        results, index = [], 0
        for p in prepared:
            keyframes = []
            for time_s, (height, width) in zip(p["frame_times"], p["sizes"]):
                found = [dict(d, mask=encode_mask(m), area=int(m.sum())) for d, m in zip(detections[index], masks[index])]
                keyframes.append({"time": time_s, "width": width, "height": height, "detections": found})
                index += 1
            results.append(Result(fields={"labels": self.labels, "keyframes": keyframes, "preset": self.preset,
                                          "num_detections": sum(len(k["detections"]) for k in keyframes)}))
        return results

    def _detect(self, prepared: list[dict]) -> list[list[dict]]:
        pixels = [image for p in prepared for image in p["detector_pixels"]]
        pixel_values, pixel_mask = pad_images([image.to(self.device, non_blocking=True) for image in pixels])  # padded on the device
        count = len(pixels)
        text = {name: value.expand(count, -1).to(self.device) for name, value in self.text.items()}
        outputs = self.detector(pixel_values=pixel_values, pixel_mask=pixel_mask, **text)
        # only queries over the threshold, and at most max_detections of each frame, can be kept: the rest never reach
        # the post-processing, whose label extraction runs per box on the CPU (900 queries a frame)
        scores = outputs.logits.float().sigmoid().amax(dim=-1)
        keep = max(1, int((scores > self.box_threshold).sum(dim=1).max()))
        best = scores.topk(min(keep, self.max_detections or keep), dim=1).indices[..., None]
        outputs.logits = outputs.logits.float().gather(1, best.expand(-1, -1, outputs.logits.shape[-1])).cpu()
        outputs.pred_boxes = outputs.pred_boxes.float().gather(1, best.expand(-1, -1, 4)).cpu()
        sizes = [size for p in prepared for size in p["sizes"]]
        found = self.detector_processor.post_process_grounded_object_detection(
            outputs, text["input_ids"].cpu(), threshold=self.box_threshold, text_threshold=self.text_threshold, target_sizes=sizes)
        detections = []
        for (height, width), result in zip(sizes, found):
            order = result["scores"].argsort(descending=True)[: self.max_detections or None].tolist()
            frame_detections = []
            for i in order:
                x0, y0, x1, y1 = result["boxes"][i].tolist()
                box = [max(0.0, min(x0, width)), max(0.0, min(y0, height)), max(0.0, min(x1, width)), max(0.0, min(y1, height))]
                frame_detections.append({"label": result["text_labels"][i], "score": round(float(result["scores"][i]), 4),
                                         "box": [round(v, 2) for v in box]})
            detections.append(frame_detections)
        return detections

    def _segment(self, prepared: list[dict], detections: list[list[dict]]) -> list[list[np.ndarray]]:
        masks: list[list[np.ndarray]] = [[] for _ in detections]
        frames = [(p, i) for p in prepared for i in range(len(p["sizes"]))]
        wanted = [n for n, found in enumerate(detections) if found]
        if not wanted:
            return masks
        pixels = torch.stack([frames[n][0]["sam_pixels"][frames[n][1]] for n in wanted])
        embeddings = self.sam.get_image_embeddings(pixels.to(self.device))  # batched
        for row, n in enumerate(wanted):
            p, i = frames[n]
            height, width = p["sizes"][i]
            # boxes in the resized image's pixels, each axis by its rounded new size over its old one: SAM's
            # ResizeLongestSide.apply_boxes (what Grounded-SAM's predictor calls), as SamProcessor scales them too
            resized_height, resized_width = (int(v) for v in p["reshaped_input_sizes"][i])
            scale = torch.tensor([resized_width / width, resized_height / height] * 2)
            boxes = torch.tensor([[d["box"] for d in detections[n]]], dtype=torch.float32) * scale
            output = self.sam(image_embeddings=embeddings[row : row + 1], input_boxes=boxes.to(self.device, self.dtype),
                              multimask_output=False)
            [frame_masks] = self.sam_processor.post_process_masks(output.pred_masks.float().cpu(), p["original_sizes"][i : i + 1],
                                                                  p["reshaped_input_sizes"][i : i + 1])
            masks[n] = [m[0].numpy() for m in frame_masks]
        return masks


def _unpadded(processed) -> list[tuple[int, int]]:
    """Each image's size inside the processor's padded batch (from its pixel mask)."""
    mask = processed["pixel_mask"]
    return [(int(m.any(dim=1).sum()), int(m.any(dim=0).sum())) for m in mask]


def pad_images(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """[3, H, W] images padded bottom-right with zeros to one size, and the mask of real pixels, as the
    Grounding DINO processor pads a batch."""
    height, width = max(i.shape[1] for i in images), max(i.shape[2] for i in images)
    batch = images[0].new_zeros((len(images), 3, height, width))
    mask = torch.zeros((len(images), height, width), dtype=torch.long, device=images[0].device)
    for row, image in enumerate(images):
        batch[row, :, : image.shape[1], : image.shape[2]] = image
        mask[row, : image.shape[1], : image.shape[2]] = 1
    return batch, mask
