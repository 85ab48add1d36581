"""Side-by-side measurements, printed as ratios from one run on the same inputs.

    python -m extract.bench data [--clips 48] [--shards 4] [--workers 0,1,2]
    python -m extract.bench av_sync
    python -m extract.bench generation [--size full] [--requests 32] [--slots 8] [--cap 1024]
    python -m extract.bench run [--input DIR] [--layers N]
    python -m extract.bench pipeline [--input DIR] [--workers 2] [--model-wait-ms 100]
    python -m extract.bench export [--clips 20000,200000]
    python -m extract.bench select [--clips 20000,200000]
    python -m extract.bench llava_video [--size full] [--checkpoint DIR] [--frames 64] [--new-tokens 32] [--batches 1,2,4,8,16]
    python -m extract.bench grounding_sam [--size full] [--detector DIR --segmenter DIR] [--batches 1,2,4]
    python -m extract.bench internvl [--size full] [--checkpoint DIR] [--new-tokens 32] [--batches 1,2,4]
    python -m extract.bench vlm_caption [--size full] [--checkpoint DIR] [--new-tokens 32] [--seconds 4] [--batches 1,2,4]
    python -m extract.bench audio_caption [--size full|tiny] [--seconds 10] [--caption-tokens 20] [--batches 1,4,16]
    python -m extract.bench synchformer [--seconds 4.8] [--batches 1,2]

One module per benchmark (its options in `add_arguments`, its measurement in `bench_<name>`), each printing ratios
measured side by side in one run on the same inputs; `common` holds what they share, `floors` the paper estimates of
what a GPU would do, `synthetic` the ffmpeg-made clips (also the tests' and the bundled sample's), `fake_run` a made-up
run's output at any size.
"""
