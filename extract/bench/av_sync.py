"""`python -m extract.bench av_sync`: the av_sync head's accuracy over generated flash-and-click clips, and its speed."""

from __future__ import annotations

import time

from extract.decode import decode_media


def bench_av_sync(args) -> None:
    """Accuracy of the av_sync head over generated flash/click clips, and its speed on this machine."""
    from extract.bench.synthetic import flash_click_clip
    from extract.heads import Clip, build

    head = build("av_sync", {"method": "onset_xcorr"})
    offsets = (-0.5, -0.25, -0.1, -0.03, 0.0, 0.03, 0.1, 0.25, 0.5)
    noise_levels = (-40.0, -20.0)
    print(f"# extract.bench av_sync: 6 s clips, 4 flashes with clicks at each offset in {offsets} s, "
          f"background noise {noise_levels} dBFS; method {head.method}")
    print(f"{'fps':>4}  {'clips':>5}  {'mean |err| ms':>13}  {'max |err| ms':>12}  {'max |err| frames':>16}  {'within 1 frame':>14}  {'clips/s':>7}")
    for fps in (24, 25, 30, 50, 60):
        clips = [flash_click_clip(fps, offset, noise_db=noise, seed=i) for i, (offset, noise) in
                 enumerate((o, n) for o in offsets for n in noise_levels)]
        truths = [offset for offset in offsets for _ in noise_levels]
        started = time.perf_counter()
        estimates = [head.infer([Clip("k", "v", 0.0, 6.0, decode_media(c, head.media_spec))])[0] for c in clips]
        elapsed = time.perf_counter() - started
        errors = [abs((e.fields["offset_s"] if e.status == "ok" else float("inf")) - t) for e, t in zip(estimates, truths)]
        within = sum(err <= 1 / fps for err in errors) / len(errors)
        print(f"{fps:>4}  {len(clips):>5}  {1000 * sum(errors) / len(errors):>13.1f}  {1000 * max(errors):>12.1f}  "
              f"{max(errors) * fps:>16.2f}  {100 * within:>13.0f}%  {len(clips) / elapsed:>7.1f}")


def add_arguments(parser) -> None:
    pass  # no options
