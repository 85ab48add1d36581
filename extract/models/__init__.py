"""The model code the heads run, and nothing of the pipeline: a model here imports torch, transformers and its
neighbours in this folder, never the runner, the data module or the writer.

- `beats_conformer_bart`: the audio captioner (BEATs + Conformer + BART), from the authors' release.
- `synchformer`: av_sync's learned model and its input layout.
- `generation`: the generation engine the captioning heads share (continuous batching) and caption fields.
- `convert`: original checkpoints into the transformers format the heads load (`python -m extract.convert`).
- `random_models`: full-size random models from the published configurations (the benchmarks) and tiny ones.
"""
