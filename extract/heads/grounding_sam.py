"""grounding_sam: open-vocabulary boxes (Grounding DINO) and their masks (SAM) on keyframes.

As in transformers' Grounding DINO + SAM recipe: the detector finds boxes for the text queries,
then SAM is prompted with those boxes. Masks are written as COCO RLE (pycocotools).
"""

from __future__ import annotations

import numpy as np
import torch
from pycocotools import mask as mask_utils

from extract.decode import MediaSpec
from extract.heads import Clip, Head, Result, load_pretrained, register, resolve_dtype


def normalise_labels(labels: str | list[str]) -> str:
    """Grounding DINO's query format: lowercase phrases, each ending with a period."""
    phrases = labels if isinstance(labels, (list, tuple)) else str(labels).split(".")
    phrases = [" ".join(p.lower().split()) for p in phrases]
    return " ".join(f"{p}." for p in phrases if p)


def encode_mask(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


@register
class GroundingSam(Head):
    name = "grounding_sam"

    def __init__(self, detector: str = "IDEA-Research/grounding-dino-base", segmenter: str = "facebook/sam-vit-base",
                 labels: str = "person. face. hand. animal. vehicle. building. text.", box_threshold: float = 0.35,
                 text_threshold: float = 0.25, num_keyframes: int = 4, max_detections: int = 20, dtype: str = "auto"):
        self.detector_id, self.segmenter_id = detector, segmenter
        self.model_id = f"{detector} + {segmenter}"
        self.labels = normalise_labels(labels)
        self.box_threshold, self.text_threshold = box_threshold, text_threshold
        self.max_detections, self.dtype_name = max_detections, dtype
        self.media_spec = MediaSpec(num_frames=num_keyframes)  # full resolution: boxes are in the frame's pixels

    def load(self, device: torch.device) -> None:
        from transformers import GroundingDinoForObjectDetection, SamModel, SamProcessor

        dtype = resolve_dtype(self.dtype_name, device)
        self.attach(load_pretrained(GroundingDinoForObjectDetection, self.detector_id, device, dtype),
                    load_pretrained(SamModel, self.segmenter_id, device, dtype, processor_class=SamProcessor), device)

    def attach(self, detector: tuple, segmenter: tuple, device: torch.device) -> None:
        """Use these (processor, model) pairs (benchmarks attach full-size random ones built on the device)."""
        (self.detector_processor, self.detector), (self.sam_processor, self.sam) = detector, segmenter
        self.dtype, self.device = self.detector.dtype, device

    def infer(self, clips: list[Clip]) -> list[Result]:
        frames = [frame for clip in clips for frame in clip.media.frames]  # every keyframe of the batch at once
        detections = self._detect(frames)
        masks = self._segment(frames, detections)
        results, index = [], 0
        for clip in clips:
            keyframes = []
            for time_s, frame in zip(clip.media.frame_times, clip.media.frames):
                height, width = frame.shape[:2]
                found = [dict(d, mask=encode_mask(m), area=int(m.sum())) for d, m in zip(detections[index], masks[index])]
                keyframes.append({"time": time_s, "width": width, "height": height, "detections": found})
                index += 1
            results.append(Result(fields={"labels": self.labels, "keyframes": keyframes,
                                          "num_detections": sum(len(k["detections"]) for k in keyframes)}))
        return results

    def _detect(self, frames: list[np.ndarray]) -> list[list[dict]]:
        inputs = self.detector_processor(images=frames, text=[self.labels] * len(frames), return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        outputs = self.detector(**inputs)
        outputs.logits, outputs.pred_boxes = outputs.logits.float(), outputs.pred_boxes.float()
        sizes = [frame.shape[:2] for frame in frames]
        found = self.detector_processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=self.box_threshold, text_threshold=self.text_threshold, target_sizes=sizes)
        detections = []
        for (height, width), result in zip(sizes, found):
            order = result["scores"].argsort(descending=True)[: self.max_detections].tolist()
            frame_detections = []
            for i in order:
                x0, y0, x1, y1 = result["boxes"][i].tolist()
                box = [max(0.0, min(x0, width)), max(0.0, min(y0, height)), max(0.0, min(x1, width)), max(0.0, min(y1, height))]
                frame_detections.append({"label": result["text_labels"][i], "score": round(float(result["scores"][i]), 4),
                                         "box": [round(v, 2) for v in box]})
            detections.append(frame_detections)
        return detections

    def _segment(self, frames: list[np.ndarray], detections: list[list[dict]]) -> list[list[np.ndarray]]:
        masks: list[list[np.ndarray]] = [[] for _ in frames]
        wanted = [i for i, found in enumerate(detections) if found]
        if not wanted:
            return masks
        inputs = self.sam_processor(images=[frames[i] for i in wanted], return_tensors="pt")
        embeddings = self.sam.get_image_embeddings(inputs["pixel_values"].to(self.device, self.dtype))  # batched
        longest = self.sam_processor.image_processor.size["longest_edge"]
        for row, i in enumerate(wanted):
            height, width = frames[i].shape[:2]
            scale = longest / max(height, width)  # boxes in the resized image's pixels, as SamProcessor scales them
            boxes = torch.tensor([[d["box"] for d in detections[i]]], dtype=torch.float32) * scale
            output = self.sam(image_embeddings=embeddings[row : row + 1], input_boxes=boxes.to(self.device, self.dtype),
                              multimask_output=False)
            [frame_masks] = self.sam_processor.post_process_masks(output.pred_masks.float().cpu(), inputs["original_sizes"][row : row + 1],
                                                                  inputs["reshaped_input_sizes"][row : row + 1])
            masks[i] = [m[0].numpy() for m in frame_masks]
        return masks
