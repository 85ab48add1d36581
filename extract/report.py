"""A page to look at a run: counts, distributions, failures, and a grid of clips with what every head said.

    python -m extract.report OUTPUT_DIR [--out FILE] [--limit N]

One self-contained HTML file (default OUTPUT_DIR/report.html) that a browser opens without a
server: the records' counts per head by status and error type; histograms (inline SVG) of the
distributions that matter; the members that failed, with their errors; and a grid of up to N
decoded clips, each with a keyframe and what every head said about it: captions and their
confidence, keyframe descriptions, boxes and masks drawn on the frame, the audio offset. The
grid filters by head and status.

The pictures are read back from the input shards, where the records say each clip came from,
and decoded at the same keyframe the boxes were found on: a run writes nothing extra for the
report, and the frames are the ones the heads saw. Shards that moved give a grid without them.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from extract.errors import or_exit
from extract.export import current_location, head_folders, shard_records, shard_stems

THUMB_WIDTH = 320
FAILURES_SHOWN = 500
# (title, unit, the head it needs (None: any), where the value is in a clip's records)
DISTRIBUTIONS = [
    ("Duration", "s", None, lambda r: _get(r, "probe", "duration_s_measured") or _window(r)),
    ("Resolution (height)", "px", "probe", lambda r: _decoded_stream(r.get("probe")).get("height")),
    ("Motion energy", "luma levels", "probe", lambda r: _get(r, "probe", "stats", "motion_energy")),
    ("Loudness", "dBFS", "probe", lambda r: _get(r, "probe", "stats", "audio_rms_dbfs")),
    ("Audio offset", "s", "av_sync", lambda r: _get(r, "av_sync", "offset_s")),
    ("Caption length (llava_video)", "words", "llava_video", lambda r: _words(_get(r, "llava_video", "caption"))),
    ("Caption length (vlm_caption)", "words", "vlm_caption", lambda r: _words(_get(r, "vlm_caption", "caption"))),
    ("Caption length (audio_caption)", "words", "audio_caption", lambda r: _words(_get(r, "audio_caption", "caption"))),
    ("Detections per keyframe", "boxes", "grounding_sam", lambda r: _per_keyframe(r)),
]
TICKS = 5  # labels under a histogram's axis


def _get(clip: dict, head: str, *path):
    value = clip.get(head)
    for name in path:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def _window(clip: dict):
    """The clip's named window, for runs without probe; only for clips some head read (not the broken ones)."""
    if not any(record.get("status") == "ok" for record in clip.values()):
        return None
    record = next(iter(clip.values()))
    return record["end"] - record["start"] if record.get("start") is not None and record.get("end") is not None else None


def _decoded_stream(probe: dict | None) -> dict:
    """The video stream probe decoded (`video_stream_index`, the one its measured fields describe), else the first."""
    streams = (probe or {}).get("video_streams") or []
    index = (probe or {}).get("video_stream_index")
    return next((stream for stream in streams if stream.get("index") == index), streams[0] if streams else {})


def _words(text):
    return len(text.split()) if isinstance(text, str) else None


def _per_keyframe(clip: dict):
    keyframes = _get(clip, "grounding_sam", "keyframes")
    return sum(len(k["detections"]) for k in keyframes) / len(keyframes) if keyframes else None


# ---------------------------------------------------------------------------- reading the run


class RunView:
    """What the page shows, gathered shard by shard: counts and values over every clip, details of the first N."""

    def __init__(self, output_dir: Path, limit: int):
        self.folders = head_folders(output_dir)
        self.counts = {head: Counter() for head in self.folders}
        self.error_types = {head: Counter() for head in self.folders}
        self.values = defaultdict(list)
        self.failures: list[dict] = []
        self.clips: list[dict] = []  # {head: record} for the grid
        self.unfinished: list[str] = []
        self.total = 0
        for stem in shard_stems(self.folders):
            per_head, unfinished = shard_records(stem, self.folders)
            self.unfinished += [f"{head}/{stem}" for head in unfinished]
            for key in dict.fromkeys(k for records in per_head.values() for k in records):
                clip = {head: records[key] for head, records in per_head.items() if key in records}
                self._add(clip, limit)

    def _add(self, clip: dict, limit: int) -> None:
        self.total += 1
        for head, record in clip.items():
            self.counts[head][record["status"]] += 1
            if record.get("error_type"):
                self.error_types[head][record["error_type"]] += 1
        for title, _, _, pick in DISTRIBUTIONS:
            value = pick(clip)
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.values[title].append(float(value))
        failed = [(head, r) for head, r in clip.items() if r["status"] in ("error", "rejected")]
        if failed and len(self.failures) < FAILURES_SHOWN:
            head, record = failed[0]
            self.failures.append({"member": record["member"], "shard": record["shard"], "heads": [h for h, _ in failed],
                                  "error_type": record["error_type"], "error": record["error"]})
        decoded = any(r["status"] in ("ok", "skipped") for r in clip.values())
        if decoded and len(self.clips) < limit:
            self.clips.append(clip)


# ---------------------------------------------------------------------------- pictures from the input shards


def keyframes(clips: list[dict], folders: dict[str, Path] | None = None) -> dict[str, tuple[np.ndarray, float] | None]:
    """{key: (frame, time)} for the grid's clips: grounding_sam's first keyframe where it ran (its boxes are drawn on it),
    else the middle of the clip; decoded from the input shards the records name."""
    from extract.data import ClipItem, ShardPlan, read_members
    from extract.decode import DecodeFailure, MediaSpec, decode_media

    wanted = defaultdict(dict)
    for clip in clips:
        record = next(iter(clip.values()))
        boxes = clip.get("grounding_sam")
        count = len(boxes["keyframes"]) if boxes and boxes.get("keyframes") else 1
        wanted[record["shard"]][record["key"]] = MediaSpec(num_frames=count)
    found = {}
    for shard, specs in wanted.items():
        where = current_location(shard, folders or {})
        plan = ShardPlan({where: {"report": set()}})
        try:
            for item in read_members([{"url": where}], plan, max_member_bytes=4 << 30):
                if isinstance(item, ClipItem) and item.key in specs and item.data is not None:
                    try:
                        media = decode_media(bytes(item.data), specs.pop(item.key))
                        found[item.key] = (media.frames[0], media.frame_times[0])
                    except DecodeFailure:
                        pass
                if not specs:
                    break
        except Exception:  # a shard that moved or broke: its clips go without a picture
            continue
    return found


def _thumbnail(frame: np.ndarray, clip: dict) -> tuple[str, float]:
    """The frame as a JPEG data URI, SAM's masks blended in; and its scale (thumbnail pixels per frame pixel)."""
    from PIL import Image

    image = frame.astype(np.float32)
    colours = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180]], np.float32)
    detections = ((_get(clip, "grounding_sam", "keyframes") or [{}])[0]).get("detections") or []
    if detections:
        try:
            from pycocotools import mask as mask_utils

            for index, detection in enumerate(detections):
                rle = detection.get("mask")
                if rle:
                    mask = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
                    image[mask] = 0.55 * image[mask] + 0.45 * colours[index % len(colours)]
        except ImportError:  # without pycocotools the boxes are drawn, the masks not
            pass
    picture = Image.fromarray(image.clip(0, 255).astype(np.uint8))
    scale = THUMB_WIDTH / picture.width
    picture = picture.resize((THUMB_WIDTH, max(1, round(picture.height * scale))), Image.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), scale


# ---------------------------------------------------------------------------- the page


def number(value: float) -> str:
    """A value as a reader reads it: whole numbers from 100 up (1080, not 1.08e+03), three significant digits below."""
    if abs(value) >= 100:
        return f"{value:.0f}"
    text = f"{value:.3g}"
    return text if "e" not in text else f"{value:.6f}".rstrip("0").rstrip(".")


def tick_labels(low: float, high: float) -> list[str]:
    """Labels under an axis from low to high, with as many decimals as their spacing needs (one label when all the
    values are equal)."""
    if high <= low:
        return [number(low)]
    step = (high - low) / (TICKS - 1)
    decimals = max(0, math.ceil(-math.log10(step))) if step < 1 else 0
    labels = [f"{v:.{decimals}f}" if abs(v) < 100 or decimals else f"{v:.0f}" for v in np.linspace(low, high, TICKS)]
    return [label if label != "-0" else "0" for label in labels]


def _histogram(title: str, unit: str, values: list[float], why_none: str = "no clip gave a value") -> str:
    width, height, bins, top = 300, 120, 24, 14  # top: room for the counts over the bars
    if not values:
        return (f'<figure class="chart"><figcaption>{html.escape(title)}</figcaption>'
                f'<p class="none">no values: {html.escape(why_none)}</p></figure>')
    low, high = min(values), max(values)
    edges = np.linspace(low, high if high > low else low + 1, bins + 1)
    counts, _ = np.histogram(values, bins=edges)
    bar, scale = width / bins, (height - top) / counts.max()
    rects = "".join(f'<rect x="{i * bar:.1f}" y="{height - scale * c:.1f}" width="{bar - 1:.1f}" height="{scale * c:.1f}">'
                    f'<title>{number(edges[i])} to {number(edges[i + 1])}: {c}</title></rect>'
                    + (f'<text x="{(i + 0.5) * bar:.1f}" y="{height - scale * c - 2:.1f}">{c}</text>' if c else "")
                    for i, c in enumerate(counts))
    ticks = "".join(f"<span>{v}</span>" for v in tick_labels(low, high))
    median = float(np.median(values))
    return (f'<figure class="chart"><figcaption>{html.escape(title)} <span>({unit}; {len(values)} clips, median '
            f'{number(median)})</span></figcaption><svg viewBox="0 0 {width} {height}" width="{width}" height="{height}">{rects}'
            f'</svg><div class="axis">{ticks}</div></figure>')


def _said(head: str, record: dict) -> str:
    """What one head said about a clip, in a line or a few."""
    status = record["status"]
    if status != "ok":
        return f'<b>{head}</b> <i class="{status}">{status}</i> {html.escape(record.get("error") or "")}'
    text = ""
    if head in ("llava_video", "vlm_caption", "audio_caption"):
        text = f'“{html.escape(record.get("caption") or "")}” <span class="conf">confidence {record.get("confidence") or 0:.2f}</span>'
    elif head == "internvl":
        text = "<br>".join(f'{k["time"]:.2f}s: “{html.escape(k["description"] or "")}”' for k in record.get("keyframes") or [])
    elif head == "grounding_sam":
        first = (record.get("keyframes") or [{}])[0]
        text = ", ".join(f'{html.escape(d["label"])} {d["score"]:.2f}' for d in first.get("detections") or []) or "nothing found"
    elif head == "av_sync":
        text = f'audio {"lags" if (record.get("offset_s") or 0) > 0 else "leads"} by {abs(record.get("offset_s") or 0):.3f} s ' \
               f'(confidence {record.get("confidence") or 0:.2f}, {html.escape(record.get("method") or "")}'
        if record.get("desync_s") is not None:
            windows = ", ".join(f'{w["start_s"]:.1f}-{w["end_s"]:.1f} s: {w["offset_s"]:+.1f}' for w in record.get("windows") or [])
            text += f'; DeSync {record["desync_s"]:.2f} s over {len(record.get("windows") or [])} window(s): {windows}'
        text += ")"
    elif head == "probe":
        video = _decoded_stream(record)
        text = (f'{record.get("container")}, {video.get("codec")} {video.get("width")}x{video.get("height")} at '
                f'{video.get("fps")} fps, {record.get("duration_s_measured") or record.get("duration_s") or 0:.1f} s'
                + ("" if record.get("has_audio") else ", no sound"))
    return f"<b>{head}</b> {text}"


def _cell(clip: dict, picture) -> str:
    record = next(iter(clip.values()))
    statuses = " ".join(f"{head}:{r['status']}" for head, r in clip.items())
    figure = '<div class="nopicture">no picture (the input shard was not found)</div>'
    if picture is not None:
        frame, time_s = picture
        uri, scale = _thumbnail(frame, clip)
        boxes = ((_get(clip, "grounding_sam", "keyframes") or [{}])[0]).get("detections") or []
        svg = "".join(f'<rect x="{d["box"][0] * scale:.1f}" y="{d["box"][1] * scale:.1f}" width="{(d["box"][2] - d["box"][0]) * scale:.1f}" '
                      f'height="{(d["box"][3] - d["box"][1]) * scale:.1f}"><title>{html.escape(d["label"])} {d["score"]:.2f}</title></rect>'
                      for d in boxes)
        height = round(frame.shape[0] * scale)
        figure = (f'<div class="frame"><img src="{uri}" width="{THUMB_WIDTH}" height="{height}" alt="{html.escape(record["key"])} at {time_s:.2f}s">'
                  f'<svg viewBox="0 0 {THUMB_WIDTH} {height}" width="{THUMB_WIDTH}" height="{height}">{svg}</svg></div>')
    lines = "".join(f"<li>{_said(head, r)}</li>" for head, r in clip.items())
    window = f' ({record["start"]:g}-{record["end"]:g} s)' if record.get("start") is not None and record.get("end") is not None else ""
    return (f'<article class="clip" data-statuses="{statuses}">{figure}<h3 title="{html.escape(record["member"])}">{html.escape(record["video_id"] or record["key"])}'
            f'{window}</h3><ul>{lines}</ul></article>')


STYLE = """body{font:14px system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;
padding:3px 8px;text-align:right}th:first-child,td:first-child{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:16px}
.chart{margin:0 0 8px;width:300px;max-width:100%}.chart svg{max-width:100%;height:auto}.chart rect{fill:#4a78c2}
.chart text{font-size:9px;fill:#444;text-anchor:middle}.chart figcaption span{color:#777}.axis{display:flex;
justify-content:space-between;gap:6px;width:300px;max-width:100%;color:#777;font-size:11px}.charts{column-gap:32px}
.grid{display:flex;flex-wrap:wrap;gap:12px}.clip{width:320px;max-width:100%;box-sizing:border-box;border:1px solid #ddd;
padding:6px}.clip h3{font-size:13px;margin:6px 0;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}.clip ul{padding-left:16px;
margin:0;font-size:12px;overflow-wrap:anywhere}.frame img,.frame svg{max-width:100%;height:auto}.table{overflow-x:auto;max-width:100%}
.failures td{overflow-wrap:anywhere;max-width:40em}.frame{position:relative}.frame svg{position:absolute;left:0;top:0}.frame rect{fill:none;stroke:#ff0;
stroke-width:2}.error{color:#b00}.skipped{color:#a60}.conf{color:#777}.nopicture{height:60px;background:#eee;color:#777;padding:8px}
.hidden{display:none}.failures td,.failures th{text-align:left}"""

SCRIPT = """function filterClips(){const h=document.getElementById('head').value,s=document.getElementById('status').value;
let shown=0;for(const c of document.querySelectorAll('.clip')){const show=c.dataset.statuses.split(' ').some(t=>{
const [head,status]=t.split(':');return (h===''||head===h)&&(s===''||status===s);});c.classList.toggle('hidden',!show);
shown+=show?1:0;}document.getElementById('shown').textContent=shown;}"""


def render(view: RunView, pictures: dict, title: str) -> str:
    heads = list(view.folders)
    statuses = ("ok", "skipped", "error", "rejected")
    counts = "".join(f"<tr><td>{head}</td>" + "".join(f'<td class="count" data-head="{head}" data-status="{s}">{view.counts[head][s]}</td>'
                                                    for s in statuses) + f"<td>{sum(view.counts[head].values())}</td></tr>" for head in heads)
    types = "".join(f"<tr><td>{head}</td><td>{html.escape(t)}</td><td>{n}</td></tr>" for head in heads
                    for t, n in view.error_types[head].most_common())
    failures = "".join(f"<tr><td>{html.escape(f['member'])}</td><td>{html.escape(f['shard'] or '')}</td>"
                       f"<td>{html.escape(f['error_type'] or '')}</td><td>{html.escape((f['error'] or '')[:300])}</td>"
                       f"<td>{', '.join(f['heads'])}</td></tr>" for f in view.failures)
    # a chart of a head in the run that has no values says so (every av_sync record skipped, say) rather than vanish
    charts = "".join(_histogram(t, unit, view.values[t], f"no {head or 'clip'} record gave one")
                     for t, unit, head, _ in DISTRIBUTIONS if view.values[t] or (head in heads))
    cells = "".join(_cell(clip, pictures.get(next(iter(clip.values()))["key"])) for clip in view.clips)
    options = "".join(f'<option value="{h}">{h}</option>' for h in heads)
    unfinished = f"<p>Unfinished shards (their complete records are shown): {', '.join(view.unfinished)}</p>" if view.unfinished else ""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body><h1>{html.escape(title)}</h1><p>{view.total} clips, {len(heads)} heads: {', '.join(heads)}.</p>{unfinished}
<h2>Records by status</h2><div class="table"><table id="counts"><tr><th>head</th>{''.join(f'<th>{s}</th>' for s in statuses)}<th>all</th></tr>
{counts}</table></div>
<h2>Error types</h2><div class="table"><table><tr><th>head</th><th>error_type</th><th>records</th></tr>{types}</table></div>
<h2>Distributions</h2><div class="charts">{charts}</div>
<h2>Clips</h2><p>head <select id="head" onchange="filterClips()"><option value="">any</option>{options}</select>
status <select id="status" onchange="filterClips()"><option value="">any</option>{''.join(f'<option>{s}</option>' for s in statuses)}</select>
showing <span id="shown">{len(view.clips)}</span> of the first {len(view.clips)} decoded clips</p>
<div class="grid">{cells}</div>
<h2>Failed members</h2>{'' if view.failures else '<p class="none">none: every member was read</p>'}<div class="table"><table class="failures"><tr><th>member</th><th>shard</th><th>error_type</th><th>error</th>
<th>heads</th></tr>{failures}</table></div>
<script>{SCRIPT}</script></body></html>"""


def report(output_dir: Path, out: Path | None = None, limit: int = 120) -> dict:
    output_dir = Path(output_dir)
    view = RunView(output_dir, limit)
    pictures = keyframes(view.clips, view.folders)
    out = Path(out) if out else output_dir / "report.html"
    temporary = out.with_name(out.name + ".tmp")
    temporary.write_text(render(view, pictures, f"extract: {output_dir.resolve().name}"), encoding="utf-8")
    temporary.replace(out)
    return {"out": str(out), "clips": view.total, "shown": len(view.clips), "pictures": len(pictures)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m extract.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--out", type=Path, help="the page to write (default: OUTPUT_DIR/report.html)")
    parser.add_argument("--limit", type=int, default=120, help="clips in the grid (the first decoded ones)")
    args = parser.parse_args(argv)
    done = or_exit(lambda: report(args.output_dir, args.out, args.limit))
    print(f"wrote {done['out']}: {done['clips']} clips, {done['shown']} in the grid ({done['pictures']} with a picture)")


if __name__ == "__main__":
    main()
