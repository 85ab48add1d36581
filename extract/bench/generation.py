"""`python -m extract.bench generation`: the generation engine against transformers' generate on the same requests
with long-tailed caption lengths."""

from __future__ import annotations

import time

import torch

from extract.bench.common import cut_note, device_name, moving_pattern, sync


def long_tailed_lengths(count: int, cap: int, median: float = 150, share_at_cap: float = 0.10, seed: int = 0) -> list[int]:
    """Caption lengths drawn log-normally with this median and this share of them at the cap (cut to it): long-tailed,
    as real captions are under the authors' 1,024-token limit."""
    import math
    import random
    from statistics import NormalDist

    sigma = math.log(cap / median) / NormalDist().inv_cdf(1 - share_at_cap)
    rng = random.Random(seed)
    return [max(1, min(cap, round(rng.lognormvariate(math.log(median), sigma)))) for _ in range(count)]


class _RowLengths:
    """transformers' stopping criterion that ends row r after lengths[r] new tokens, as an end token would."""

    def __init__(self, lengths: list[int]):
        self.lengths = torch.tensor(lengths)

    def __call__(self, input_ids, scores, **kwargs):  # given embeddings alone, input_ids holds the new tokens only
        return (input_ids.shape[1] >= self.lengths).to(input_ids.device)


def _generate_static(model, prompts: list[torch.Tensor], lengths: list[int], batch: int, static_cache: bool):
    """transformers' generate over static batches of `batch` requests (left-padded), each batch running until its
    longest caption ends: (tokens of each request, decode steps)."""
    from transformers import StoppingCriteriaList

    tokens, steps = [], 0
    for first in range(0, len(prompts), batch):
        rows, row_lengths = prompts[first : first + batch], lengths[first : first + batch]
        longest = max(len(p) for p in rows)
        embeds = torch.zeros(len(rows), longest, rows[0].shape[1], dtype=rows[0].dtype, device=rows[0].device)
        mask = torch.zeros(len(rows), longest, dtype=torch.long, device=rows[0].device)
        for r, prompt in enumerate(rows):
            embeds[r, longest - len(prompt):], mask[r, longest - len(prompt):] = prompt, 1
        cache = {"cache_implementation": "static", "disable_compile": True} if static_cache else {}
        out = model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max(row_lengths), do_sample=False,
                             stopping_criteria=StoppingCriteriaList([_RowLengths(row_lengths)]), pad_token_id=0, **cache)
        steps += out.shape[1] - 1  # the first token comes from the prefill
        tokens += [row[:n] for row, n in zip(out.tolist(), row_lengths)]
    return tokens, steps


def bench_generation(args) -> None:
    """The generation engine against transformers' generate on the same requests with long-tailed caption lengths
    (each request ends after its drawn length, as an end token would end it): decode steps per request and wall time."""
    from extract.models.generation import GenerationEngine, Request

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lengths = long_tailed_lengths(args.requests, args.cap, args.median, args.share_at_cap)
    model, prompts, what = _generation_model(args, device)
    # both paths stop at the checkpoint's own end tokens (generate's default), so "same tokens" compares like with like
    configured = model.generation_config.eos_token_id
    eos = [] if configured is None else list(configured) if isinstance(configured, (list, tuple)) else [configured]
    engine = GenerationEngine(model.model.language_model if hasattr(model.model, "language_model") else model.model,
                              model.lm_head, eos, max_slots=args.slots)
    ordered = sorted(lengths)
    print(f"# extract.bench generation: {what} on {device_name(device)}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print(f"# {args.requests} requests of {min(len(p) for p in prompts)}-{max(len(p) for p in prompts)} prompt tokens; caption lengths "
          f"log-normal, median {args.median:g}, {args.share_at_cap:.0%} at the {args.cap}-token cap (drawn: median "
          f"{ordered[len(ordered) // 2]}, mean {sum(lengths) / len(lengths):.0f}, {sum(n == args.cap for n in lengths)} at the cap); "
          f"{args.slots} requests at once both ways")
    with torch.inference_mode():
        engine.generate([Request(prompts[0], len(prompts[0]), 2)])  # warm-up (and CUDA graph capture)
        engine.stats.decode_steps = 0
        sync(device)
        started = time.perf_counter()
        generations = engine.generate([Request(p, len(p), n) for p, n in zip(prompts, lengths)])
        sync(device)
        engine_s = time.perf_counter() - started
        engine_steps = engine.stats.decode_steps
        engine_line = engine.stats.describe()
        del engine
        sync(device)
        started = time.perf_counter()
        reference, static_steps = _generate_static(model, prompts, lengths, args.slots, static_cache=device.type == "cuda")
        # generate pads a row after its end token; the engine stops at it
        reference = [row[: next((k + 1 for k, t in enumerate(row) if t in eos), len(row))] for row in reference]
        sync(device)
        static_s = time.perf_counter() - started
    same = sum(g.tokens == r for g, r in zip(generations, reference))
    print(f"{'path':<34}  {'decode steps':>12}  {'steps/request':>13}  {'wall s':>8}  {'requests/hour':>13}")
    for name, steps, seconds in ((f"generate, static batches of {args.slots}", static_steps, static_s),
                                 (f"engine, {args.slots} slots", engine_steps, engine_s)):
        print(f"{name:<34}  {steps:>12}  {steps / args.requests:>13.1f}  {seconds:>8.2f}  {3600 * args.requests / seconds:>13.0f}")
    print(f"engine/generate: decode steps {engine_steps / static_steps:.2f}, wall time {engine_s / static_s:.2f}; "
          f"same tokens on {same} of {args.requests} requests")
    print(engine_line)


def _generation_model(args, device: torch.device):
    """(causal LM with .model and .lm_head, prompt embeddings, what it is): a small random Qwen2 (any machine), or
    LLaVA-Video-7B's architecture with random weights and the head's own 64-frame prompt embeddings."""
    if args.size == "full":
        from extract.heads import Clip, build, resolve_dtype
        from extract.models import random_models

        head = build("llava_video", {"checkpoint": "random weights", **({"num_frames": args.frames} if args.frames else {})})
        head.attach(*random_models.llava_video(device, resolve_dtype("auto", device), "sdpa", args.layers), device)
        prepared = head.prepare(Clip("k", "v", 0.0, 4.0, moving_pattern(head.media_spec, seconds=4.0)))
        with torch.inference_mode():
            prompt = head.prompt_embeddings(prepared)
        return head.model, [prompt] * args.requests, (f"LLaVA-Video-7B architecture, RANDOM weights, its {head.num_frames}-frame prompt"
                                                      + cut_note(args.layers))
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=1024, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=4096, eos_token_id=None, pad_token_id=0)
    model = Qwen2ForCausalLM(config).to(device).eval()
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randn(int(length), config.hidden_size, generator=generator).to(device)
               for length in torch.randint(64, 257, (args.requests,), generator=generator)]
    return model, prompts, "a small random Qwen2 (2 layers, hidden 128)"


def add_arguments(parser) -> None:
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny", help="full: LLaVA-Video-7B's architecture (a GPU)")
    parser.add_argument("--layers", type=int, help="with --size full: cut the depth, for a quick check on a small machine")
    parser.add_argument("--frames", type=int, help="with --size full: frames per clip (default: the head's 64)")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--slots", type=int, default=8, help="requests at once: the engine's slots, generate's batch")
    parser.add_argument("--cap", type=int, default=1024, help="max_new_tokens (the authors' 1,024)")
    parser.add_argument("--median", type=float, default=150)
    parser.add_argument("--share-at-cap", type=float, default=0.10)
