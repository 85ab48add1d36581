"""The report's page from records made here: what it counts, lists, shows and says (the browser test is in
test_tables.py)."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from conftest import make_clip, write_shard
from extract.report import RunView, _said, _thumbnail, keyframes, render, report
from extract.writer import OutputWriter


def _record(key: str, head: str, status: str = "ok", shard: str = "/in/a-000.tar", **fields) -> dict:
    return {"key": key, "video_id": key, "start": 0.0, "end": 1.0, "duration": None, "in_csv": False, "shard": shard,
            "member": f"{key} (0-1).mp4", "head": head, "model": None, "status": status,
            "error_type": None if status == "ok" else f"{status}_type", "error": None if status == "ok" else f"{key} went {status}",
            "arrays": [], "sample": None, **fields}


def _write(folder, head: str, records: list[dict], finish: bool = True, url: str = "/in/a-000.tar") -> None:
    writer = OutputWriter(folder / head)
    writer.plan([url])
    for record in records:
        writer.write(url, record, {})
    if finish:
        writer.finish(url, None, [], head)
    else:
        writer.flush()
    writer.close()


def test_the_view_lists_failures_and_rejections_and_shows_decoded_clips_up_to_the_limit(tmp_path):
    _write(tmp_path, "probe", [_record("good1", "probe"), _record("good2", "probe"), _record("broken", "probe", "error"),
                               _record("readme", "probe", "rejected")])
    _write(tmp_path, "av_sync", [_record("good1", "av_sync", "skipped"), _record("good2", "av_sync", "skipped"),
                                 _record("broken", "av_sync", "error"), _record("readme", "av_sync", "rejected")])
    _write(tmp_path, "llava_video", [_record("skipped_everywhere", "llava_video", "skipped")])
    view = RunView(tmp_path, limit=10)
    assert view.total == 5
    assert [f["member"] for f in view.failures] == ["broken (0-1).mp4", "readme (0-1).mp4"]
    assert {f["member"]: f["heads"] for f in view.failures}["broken (0-1).mp4"] == ["av_sync", "probe"]
    # a clip some head read is shown, one that every head skipped too; broken and rejected ones are not
    assert [next(iter(c.values()))["key"] for c in view.clips] == ["good1", "good2", "skipped_everywhere"]
    assert len(RunView(tmp_path, limit=2).clips) == 2
    assert dict(view.counts["probe"]) == {"ok": 2, "error": 1, "rejected": 1}


def test_detections_per_keyframe_are_averaged_over_the_keyframes(tmp_path):
    boxes = lambda n: [{"label": "dog", "score": 0.5, "box": [0, 0, 1, 1], "mask": None, "area": 1}] * n  # noqa: E731
    keyframes_found = [{"time": 0.1, "width": 4, "height": 4, "detections": boxes(1)},
                       {"time": 0.6, "width": 4, "height": 4, "detections": boxes(3)}]
    _write(tmp_path, "grounding_sam", [_record("a", "grounding_sam", keyframes=keyframes_found, labels="dog.", num_detections=4)])
    assert RunView(tmp_path, limit=10).values["Detections per keyframe"] == [2.0]


def test_an_unfinished_shard_is_named_on_the_page(tmp_path):
    _write(tmp_path, "probe", [_record("a", "probe")], finish=False)
    page = render(RunView(tmp_path, limit=10), {}, "run")
    assert "Unfinished shards" in page and "probe/a-000" in page


@pytest.mark.parametrize("offset, words", [(0.2, "audio lags by 0.200 s"), (-0.25, "audio leads by 0.250 s")])
def test_the_offset_is_said_the_way_round_it_is(offset, words):
    assert words in _said("av_sync", {"status": "ok", "offset_s": offset, "confidence": 0.9, "method": "onset_xcorr"})


def test_what_a_record_says_is_escaped():
    said = _said("probe", {"status": "error", "error": "<b>x</b> & <script>"})
    assert "&lt;b&gt;x&lt;/b&gt; &amp; &lt;script&gt;" in said and "<script>" not in said
    assert "&lt;i&gt;" in _said("llava_video", {"status": "ok", "caption": "<i>", "confidence": 0.5})


def _size(uri: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size


@pytest.mark.parametrize("height, width, expected", [(120, 160, (320, 240)), (360, 640, (320, 180)), (200, 100, (320, 640))])
def test_thumbnails_are_320_wide_keeping_the_frames_shape(height, width, expected):
    uri, scale = _thumbnail(np.zeros((height, width, 3), np.uint8), {})
    assert _size(uri) == expected and scale == pytest.approx(320 / width)


def test_the_picture_is_the_keyframe_grounding_sams_boxes_were_found_on(tmp_path):
    """A 1 s clip at 12 fps with 4 keyframes: the first keyframe is the frame shown at the centre of the first quarter,
    0.125 s, which is frame 1 (1/12 s); a single middle frame would be frame 6 (0.5 s)."""
    shard = write_shard(tmp_path / "in.tar", [("a (0-1).mkv", make_clip(seconds=1, rate=12, fmt="matroska", tone=None))], gz=False)
    from extract.clips import parse_member_name

    key = parse_member_name("a (0-1).mkv").key
    found = [{"time": t, "width": 96, "height": 64, "detections": []} for t in (1 / 12, 4 / 12, 7 / 12, 10 / 12)]
    clip = {"grounding_sam": {**_record(key, "grounding_sam", shard=str(shard)), "keyframes": found},
            "probe": _record(key, "probe", shard=str(shard))}
    [(frame, time_s)] = keyframes([clip]).values()
    assert time_s == pytest.approx(1 / 12, abs=1e-3) and frame.shape == (64, 96, 3)
    [(_, middle)] = keyframes([{"probe": clip["probe"]}]).values()
    assert middle == pytest.approx(6 / 12, abs=1e-3)


def test_report_writes_the_page_and_counts(tmp_path):
    _write(tmp_path, "probe", [_record("a", "probe"), _record("b", "probe", "error")])
    done = report(tmp_path, limit=5)
    assert done["clips"] == 2 and done["shown"] == 1 and (tmp_path / "report.html").is_file()


def test_numbers_read_as_numbers():
    from extract.report import number

    assert [number(v) for v in (1080, 1079.6, 128.0, 11.25, 0.5, -0.125, 0.000123, 0.0)] == \
        ["1080", "1080", "128", "11.2", "0.5", "-0.125", "0.000123", "0"]


def test_a_chart_of_a_head_with_no_values_says_so_and_bars_carry_their_counts(tmp_path):
    _write(tmp_path, "probe", [_record(f"c{i}", "probe", video_streams=[{"height": h}]) for i, h in enumerate((1080, 1080, 720))])
    _write(tmp_path, "av_sync", [_record(f"c{i}", "av_sync", "skipped") for i in range(3)])
    page = render(RunView(tmp_path, limit=10), {}, "run")
    assert "Audio offset</figcaption><p class=\"none\">no values: no av_sync record gave one" in page
    assert "Caption length (llava_video)" not in page  # a head that did not run has no chart
    chart = page.split("Resolution (height)")[1].split("</figure>")[0]
    assert "<span>1080</span>" in chart and "<span>720</span>" in chart and "e+03" not in chart
    assert "<text" in chart and ">2</text>" in chart and ">1</text>" in chart  # the counts over the bars


def test_a_file_of_many_streams_is_shown_by_the_stream_probe_decoded(tmp_path):
    """The NASA clip's layout: a small stream first, the one ffmpeg (and probe) picks later; the card and the chart
    describe the decoded one, as probe's measured fields do."""
    streams = [{"index": 0, "codec": "h264", "width": 320, "height": 180, "fps": None},
               {"index": 3, "codec": "h264", "width": 480, "height": 270, "fps": 29.97}]
    record = _record("nasa", "probe", container="mp4 (isom)", duration_s=16.6, has_audio=True, video_streams=streams,
                     video_stream_index=3)
    assert _said("probe", record) == "<b>probe</b> mp4 (isom), h264 480x270 at 29.97 fps, 16.6 s"
    _write(tmp_path, "probe", [record])
    chart = render(RunView(tmp_path, limit=10), {}, "run").split("Resolution (height)")[1].split("</figure>")[0]
    assert "<span>270</span>" in chart and "<span>180</span>" not in chart
    no_index = {k: v for k, v in record.items() if k != "video_stream_index"}
    assert "320x180" in _said("probe", no_index)  # a record from before the index was written: its first stream


def _chromium() -> str:
    import shutil

    found = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if not found:
        pytest.skip("no Chromium: install Debian's chromium (launch/test.sh does, when run as root) to test the report page")
    return found


@pytest.mark.parametrize("width", [1400, 390])
def test_the_page_fits_a_desktop_and_a_phone_whatever_the_captions(tmp_path, width):
    """A caption of one 600-character word, a long error, many heads: nothing widens the page past its window. Headless
    Chromium's window is at least 500 px wide, so the page is measured inside a frame of that width."""
    import subprocess

    _write(tmp_path, "llava_video", [_record("a", "llava_video", caption="x" * 600, confidence=0.5),
                                     _record("b", "llava_video", "error", error="y" * 2000)])
    _write(tmp_path, "probe", [_record("a", "probe"), _record("b", "probe")])
    page = tmp_path / "page.html"
    measure = ("<script>window.onload=()=>parent.postMessage(document.documentElement.scrollWidth+' '+window.innerWidth,'*')"
               "</script>")
    page.write_text(render(RunView(tmp_path, limit=10), {}, "run").replace("</body>", measure + "</body>"))
    frame = tmp_path / "frame.html"
    frame.write_text(f'<html><body style="margin:0"><iframe src="{page.name}" width="{width}" height="900" style="border:0">'
                     "</iframe><p id='measured'></p><script>addEventListener('message',e=>"
                     "document.getElementById('measured').textContent=e.data)</script></body></html>")
    dom = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          f"--window-size={max(width, 500) + 20},1000", "--dump-dom", frame.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    scroll, inner = (int(v) for v in dom.split("<p id=\"measured\">")[1].split("<")[0].split())
    assert inner == width and scroll <= inner, (scroll, inner)


def _chart(page: str, title: str) -> str:
    start = page.index(f"<figcaption>{title}")
    return page[start: page.index("</figure>", start)]


def test_each_chart_plots_its_own_quantity_with_its_unit_count_and_median(tmp_path):
    """Three clips with values set by hand: each chart counts the clips that have its quantity, says its unit and the
    median, and its axis runs from the least to the greatest value."""
    def probe(key, duration, height, motion, loudness):
        return _record(key, "probe", duration_s_measured=duration, video_stream_index=0, stats={"motion_energy": motion,
                       "audio_rms_dbfs": loudness}, video_streams=[{"index": 0, "height": height}])

    _write(tmp_path, "probe", [probe("a", 1.0, 240, 0.5, -30.0), probe("b", 2.0, 480, 1.5, -20.0), probe("c", 4.0, 1080, 9.5, None)])
    _write(tmp_path, "av_sync", [_record("a", "av_sync", offset_s=0.25), _record("b", "av_sync", "skipped", offset_s=None),
                                 _record("c", "av_sync", offset_s=-0.75)])
    _write(tmp_path, "llava_video", [_record("a", "llava_video", caption="one two three"), _record("b", "llava_video", caption="x"),
                                     _record("c", "llava_video", "error", caption=None)])
    _write(tmp_path, "vlm_caption", [_record("a", "vlm_caption", caption="a b c d e f g", confidence=0.25),
                                     _record("b", "vlm_caption", caption="a b c", confidence=0.5), _record("c", "vlm_caption", caption="")])
    page = render(RunView(tmp_path, 10), {}, "t")
    assert "“a b c d e f g” <span class=\"conf\">confidence 0.25</span>" in page  # vlm_caption's words in the clip's box
    expected = {"Duration": ("s", 3, "2", 1.0, 4.0), "Resolution (height)": ("px", 3, "480", 240, 1080),
                "Motion energy": ("luma levels", 3, "1.5", 0.5, 9.5), "Loudness": ("dBFS", 2, "-25", -30, -20),
                "Audio offset": ("s", 2, "-0.25", -0.75, 0.25), "Caption length (llava_video)": ("words", 2, "2", 1, 3),
                "Caption length (vlm_caption)": ("words", 3, "3", 0, 7)}
    for title, (unit, clips, median, low, high) in expected.items():
        chart = _chart(page, title)
        assert f"({unit}; {clips} clips, median {median})" in chart, chart[:200]
        ticks = [float(part.split("</span>")[0]) for part in chart.split('<div class="axis">')[1].split("<span>")[1:]]
        spacing = (high - low) / (len(ticks) - 1)
        assert len(ticks) == 5 and ticks == sorted(ticks), title
        assert abs(ticks[0] - low) <= spacing / 2 and abs(ticks[-1] - high) <= spacing / 2, (title, ticks)
        assert sum(int(c) for c in __import__("re").findall(r"<text[^>]*>(\d+)</text>", chart)) == clips  # every clip in a bar


def test_boxes_are_drawn_where_the_detections_are_on_the_scaled_picture():
    from extract.report import _cell

    frame = np.zeros((360, 640, 3), np.uint8)  # shown 320 wide: half size
    clip = {"grounding_sam": _record("k", "grounding_sam", keyframes=[{"time": 0.5, "detections": [
        {"label": "dog", "score": 0.9, "box": [10.0, 20.0, 110.0, 70.0], "mask": None, "area": 100}]}])}
    cell = _cell(clip, (frame, 0.5))
    assert '<rect x="5.0" y="10.0" width="50.0" height="25.0"><title>dog 0.90</title></rect>' in cell
    assert 'width="320" height="180"' in cell and "at 0.50s" in cell
