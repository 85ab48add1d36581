"""The generation engine against transformers' greedy `generate`, run on one request at a time.

Expected tokens and log-probabilities come from transformers (its `generate` and `compute_transition_scores`) on the
same tiny random language models, never from the engine.
"""

import random

import pytest
import torch

from extract.models.generation import GenerationEngine, Request

HIDDEN = 64


def _tiny_lm(kind: str, seed: int = 0):
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    common = {"vocab_size": 97, "hidden_size": HIDDEN, "intermediate_size": 96, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
              "eos_token_id": None, "pad_token_id": 0}
    torch.manual_seed(seed)
    if kind == "qwen3":  # InternVL3.5's language model: q/k norms and an explicit head_dim
        model = Qwen3ForCausalLM(Qwen3Config(**common, head_dim=24))
    else:  # LLaVA-Video's
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    return model.eval()


def _prompts(count: int, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(length, HIDDEN, generator=generator) for length in
            [random.Random(seed + i).randint(2, 40) for i in range(count)]]


def _reference(model, prompt: torch.Tensor, max_new_tokens: int, eos: list[int] | None):
    """transformers' greedy generation of one request: (tokens, log-probabilities)."""
    output = model.generate(inputs_embeds=prompt[None], attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                            max_new_tokens=max_new_tokens, do_sample=False, output_scores=True, return_dict_in_generate=True,
                            eos_token_id=eos, pad_token_id=0)
    scores = model.compute_transition_scores(output.sequences, output.scores, normalize_logits=True)[0]
    tokens = output.sequences[0].tolist()
    if eos:  # generate pads a finished row; the engine stops at the end token
        ended = next((i for i, t in enumerate(tokens) if t in eos), None)
        tokens = tokens if ended is None else tokens[: ended + 1]
    return tokens, scores[: len(tokens)].tolist()


def _engine(model, eos, slots):
    return GenerationEngine(model.model, model.lm_head, eos, max_slots=slots)


@pytest.fixture(scope="module", params=["qwen2", "qwen3"])
def model(request):
    return _tiny_lm(request.param)


def _end_tokens(model, prompts) -> list[int]:
    """Two tokens the model does say, at different steps of different requests, as end-of-sequence tokens: so the
    requests end at different steps, some by the end token, some at max_new_tokens."""
    free = [_reference(model, p, 12, None)[0] for p in prompts[:3]]
    first = next(t for k, t in enumerate(free[0]) if k >= 3 and t not in free[0][:k])
    second = next((t for k, t in enumerate(free[1]) if k >= 1 and t not in free[1][:k] and t != first), free[2][-1])
    return [first, second]


@pytest.mark.parametrize("slots", [1, 3, 8])
def test_tokens_and_logprobs_equal_generate_one_request_at_a_time(model, slots):
    prompts = _prompts(7)
    eos = _end_tokens(model, prompts)
    limits = [12, 1, 12, 5, 12, 3, 12]  # max_new_tokens cuts, one of them on the prefill's token alone
    expected = [_reference(model, p, n, eos) for p, n in zip(prompts, limits)]
    engine = _engine(model, eos, slots)
    generations = engine.generate([Request(p, len(p), n) for p, n in zip(prompts, limits)])
    lengths = [len(g.tokens) for g in generations]
    assert len(set(lengths)) >= 3, lengths  # the requests end at different steps (refills happen)
    assert any(g.tokens[-1] in eos for g in generations) and any(len(g.tokens) == n for g, n in zip(generations, limits))
    for generation, (tokens, logprobs), limit in zip(generations, expected, limits):
        assert generation.tokens == tokens
        assert len(generation.tokens) <= limit
        assert generation.logprobs == pytest.approx(logprobs, abs=2e-5)
    assert engine.stats.prefills == 7 and engine.stats.slots == min(slots, 7)


def test_a_request_does_not_depend_on_its_batch_mates_or_their_order(model):
    prompts = _prompts(6, seed=5)
    eos = _end_tokens(model, prompts)
    alone = [_engine(model, eos, 1).generate([Request(p, len(p), 10)])[0] for p in prompts]
    order = [4, 1, 5, 0, 3, 2]
    shuffled = _engine(model, eos, 3).generate([Request(prompts[i], len(prompts[i]), 10) for i in order])
    for position, index in enumerate(order):
        assert shuffled[position].tokens == alone[index].tokens
        assert shuffled[position].logprobs == pytest.approx(alone[index].logprobs, abs=2e-5)


def test_the_embeddings_of_a_request_are_made_when_its_slot_is_free(model):
    prompts = _prompts(4, seed=7)
    made = []

    def maker(index):
        def make():
            made.append(index)
            return prompts[index]
        return make

    eager = _engine(model, [], 2).generate([Request(p, len(p), 4) for p in prompts])
    lazy = _engine(model, [], 2).generate([Request(maker(i), len(p), 4) for i, p in enumerate(prompts)])
    assert made == [0, 1, 2, 3] and [g.tokens for g in lazy] == [g.tokens for g in eager]


def test_continuous_batching_refills_a_slot_at_once():
    """Two slots; one request of 10 tokens and four of 2 (no end token: max_new_tokens decides). The long one takes
    9 decode steps after its prefill; the short ones pass through the other slot one decode step each, beside it:
    9 steps in all (static batches of two would take 9 + 1 + 1 = 11)."""
    model = _tiny_lm("qwen2")
    prompts = _prompts(5, seed=3)
    engine = _engine(model, [], 2)
    generations = engine.generate([Request(p, len(p), n) for p, n in zip(prompts, [10, 2, 2, 2, 2])])
    assert [len(g.tokens) for g in generations] == [10, 2, 2, 2, 2]
    assert engine.stats.decode_steps == 9 and engine.stats.slot_steps == 9 + 4


def test_out_of_memory_halves_the_slots_and_loses_no_request(monkeypatch):
    model = _tiny_lm("qwen2")
    prompts = _prompts(5, seed=9)
    expected = [_reference(model, p, 6, None)[0] for p in prompts]
    engine = _engine(model, [], 4)
    real_decode, slot_counts = engine._decode, []

    def decode_or_run_out(state, span):
        slot_counts.append(state.shape[1])
        if state.shape[1] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_decode(state, span)

    monkeypatch.setattr(engine, "_decode", decode_or_run_out)
    generations = engine.generate([Request(p, len(p), 6) for p in prompts])
    assert [g.tokens for g in generations] == expected
    assert slot_counts[0] == 4 and 2 in slot_counts and slot_counts[-1] == 1
    assert engine.cache.slots == 1  # the cache of 4 slots given back, not kept for the halved runs


def test_the_slot_count_follows_free_memory(monkeypatch):
    """On CUDA the engine takes as many slots as free memory holds beside a prefill's reserve: computed here from
    the KV size of a request (layers x 2 x kv heads x head dim x tokens x bytes)."""
    from extract.models import generation

    model = _tiny_lm("qwen2")
    engine = _engine(model, [], 64)
    per_token = 2 * 2 * 2 * 16 * 4  # 2 layers, K and V, 2 kv heads, head dim 64/4, float32
    assert engine.kv_bytes_per_token() == per_token
    requests = [Request(torch.zeros(100, HIDDEN), 100, 156)] * 100  # 256 tokens a request
    monkeypatch.setattr(type(engine), "device", property(lambda self: torch.device("cuda")))
    # a decode step's own memory per slot beside its cache, at most, in one layer: float32 scores and weights over the
    # capacity for each of the 4 query heads, the bool mask, float32 logits and log-probabilities over 97 tokens
    step = 2 * 4 * 256 * 4 + 256 + 2 * 97 * 4
    per_slot = 256 * per_token + step
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (generation.PREFILL_RESERVE_BYTES + 10 * per_slot, 0))
    assert engine.slot_count(requests, 256) == 10
    engine.max_slots = 4
    assert engine.slot_count(requests, 256) == 4
    engine.max_slots = 64  # the caches of 10 fit, but not their steps
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (generation.PREFILL_RESERVE_BYTES + 10 * 256 * per_token, 0))
    assert engine.slot_count(requests, 256) == 9


@pytest.mark.parametrize("kind", ["qwen2", "qwen3"])
def test_a_decode_step_allocates_nothing_as_large_as_one_layers_key_cache(kind):
    """Grouped-query heads share their keys: the step reads the cache as stored and never copies it per query head
    (transformers' masked sdpa path made 7 copies a layer for LLaVA-Video). Every tensor an op makes during a step is
    recorded; none may reach the size of one layer's K cache, [slots, kv heads, capacity, head dim]."""
    from torch.utils._python_dispatch import TorchDispatchMode

    model = _tiny_lm(kind)
    engine = _engine(model, [], 8)
    prompts = _prompts(8, seed=5)
    engine.generate([Request(p, len(p), 2) for p in prompts])  # sizes the cache: 8 slots
    cache = engine.cache
    key_cache_bytes = cache.keys[0].numel() * cache.keys[0].element_size()
    assert key_cache_bytes == 8 * 2 * cache.capacity * engine.head_dim * 4  # by hand: slots, kv heads, capacity, dim, float32

    class Largest(TorchDispatchMode):
        largest = (0, None)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for tensor in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().data_ptr() not in stored:
                    size = tensor.numel() * tensor.element_size()
                    if size > self.largest[0]:
                        self.largest = (size, func)
            return out

    stored = {t.untyped_storage().data_ptr() for t in cache.keys + cache.values}  # writes into the cache are views of it
    with torch.inference_mode(), Largest() as watch:
        engine._decode(torch.tensor([[0] * 8, [30] * 8, [0] * 8]), cache.capacity)
    assert watch.largest[0] < key_cache_bytes, watch.largest


def test_logprobs_are_normalised_over_the_kept_vocabulary_rows():
    """With `vocab_rows` the argmax and the log-softmax run over the first rows only (the rows a checkpoint's authors
    keep); computed here from the model's own logits, cut by hand."""
    model = _tiny_lm("qwen2")
    [prompt] = _prompts(1, seed=11)
    kept = 60
    [generation] = GenerationEngine(model.model, model.lm_head, [], max_slots=1, vocab_rows=kept).generate(
        [Request(prompt, len(prompt), 1)])
    with torch.no_grad():
        logits = model(inputs_embeds=prompt[None]).logits[0, -1, :kept].double()
    assert generation.tokens == [int(logits.argmax())]
    assert generation.logprobs[0] == pytest.approx(float(logits.log_softmax(-1).max()), abs=1e-5)


def test_the_engine_counts_its_own_cache_as_free_when_it_sizes_the_next_one(monkeypatch):
    from extract.models import generation
    from extract.models.generation import SlotCache

    model = _tiny_lm("qwen2")
    engine = _engine(model, [], 64)
    per_token = engine.kv_bytes_per_token()
    engine.cache = SlotCache(2, 10, 2, 16, 256, torch.float32, torch.device("cpu"))  # 10 slots of 256 held already
    monkeypatch.setattr(type(engine), "device", property(lambda self: torch.device("cuda")))
    step = 2 * 4 * 256 * 4 + 256 + 2 * 97 * 4  # a slot's decode step beside its cache (as in the test above)
    free = generation.PREFILL_RESERVE_BYTES + 2 * 256 * per_token + 12 * step
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 0))
    assert engine.slot_count([Request(None, 100, 156)] * 64, 256) == 12  # 2 free + the 10 it holds


def test_a_kept_engine_grows_its_cache_for_longer_requests_and_holds_prompt_plus_caption():
    model = _tiny_lm("qwen2")
    engine = _engine(model, [], 2)
    short, long = _prompts(2, seed=21), [torch.randn(250, HIDDEN, generator=torch.Generator().manual_seed(3))]
    first = engine.generate([Request(p, len(p), 4) for p in short])
    assert engine.cache.capacity == 256
    [grown] = engine.generate([Request(long[0], 250, 20)])  # 270 positions: more than the cache had, more than the prompt
    assert engine.cache.capacity >= 270
    assert grown.tokens == _reference(model, long[0], 20, None)[0]
    assert [g.tokens for g in first] == [_reference(model, p, 4, None)[0] for p in short]


def test_what_a_caption_carries_by_hand():
    import math

    from extract.models.generation import Generated, combined_confidence, summarise
    from extract.models.random_models import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    words = tokenizer("a dog", add_special_tokens=False)["input_ids"]
    special, end = tokenizer.convert_tokens_to_ids("<|im_start|>"), tokenizer.convert_tokens_to_ids("<|im_end|>")
    said = summarise(tokenizer, [words[0], special, *words[1:], end, words[0]], torch.tensor([-0.5, -1.0, -1.5, -0.1, -9.0]), {end})
    assert said.text == "a dog" and said.num_tokens == 3 and said.finish_reason == "eos"  # cut at the end token
    assert said.mean_logprob == pytest.approx(-1.0) and said.confidence == pytest.approx(math.exp(-1.0))
    nothing = summarise(tokenizer, [end], torch.tensor([-0.2]), {end})
    assert (nothing.text, nothing.num_tokens, nothing.confidence, nothing.mean_logprob) == ("", 0, 0.0, float("-inf"))
    cut = summarise(tokenizer, words, torch.tensor([-1.0] * len(words)), {end})
    assert cut.finish_reason == "length"
    parts = [Generated("a", 1, math.exp(-1), -1.0, "eos"), Generated("b c d", 3, math.exp(-3), -3.0, "eos"), Generated("", 0, 0.0, float("-inf"), "eos")]
    confidence, mean = combined_confidence(parts)
    assert mean == pytest.approx(-2.5) and confidence == pytest.approx(math.exp(-2.5))  # weighted by tokens


def test_a_step_that_cannot_be_captured_runs_eagerly_and_says_why(monkeypatch, caplog):
    model = _tiny_lm("qwen2")
    engine = _engine(model, [], 2)
    monkeypatch.setattr(type(engine), "device", property(lambda self: torch.device("cuda")))

    def refuse(slots, span, state):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(engine, "_capture", refuse)
    with caplog.at_level("WARNING"):
        engine._decode_step_for(2, 256, torch.zeros(3, 2, dtype=torch.long))
    assert engine.stats.capture_error == "RuntimeError: operation not permitted when stream is capturing"
    assert not engine.stats.graphs and "not captured as a CUDA graph" in caplog.text and "stream is capturing" in caplog.text
    assert "CUDA graphs no (RuntimeError: operation not permitted" in engine.stats.describe()


def test_out_of_memory_with_one_slot_is_raised_not_retried_forever(monkeypatch):
    """Halving ends at one slot: there the error reaches the head (which splits its batch, then fails that clip alone)."""
    model = _tiny_lm("qwen2")
    prompts = _prompts(3, seed=4)
    engine = _engine(model, [], 4)
    slot_counts = []

    def run_out(state, span):
        slot_counts.append(state.shape[1])
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(engine, "_decode", run_out)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        engine.generate([Request(p, len(p), 6) for p in prompts])
    assert slot_counts == [3, 1]  # 3 requests: 3 slots, then 1 (halved, rounded down), then raised


def test_a_decode_step_reads_the_cache_up_to_the_longest_busy_slot_and_tokens_stay_equal_across_the_boundary():
    """A cache grown to 1024 positions by an earlier long request; now a 250-token prompt generating 20 tokens (its
    positions cross 256 during decode) beside short ones. Every step's attention sees the keys up to the longest busy
    slot's position, rounded up to 256, not the whole cache; the tokens stay those of `generate`."""
    from transformers import AttentionInterface

    from extract.models.generation import SLOT_ATTENTION, slot_decode_attention

    model = _tiny_lm("qwen2")
    engine = _engine(model, [], 3)
    engine.generate([Request(torch.randn(900, HIDDEN), 900, 2)] * 3)
    assert engine.cache.capacity == 1024
    long = torch.randn(250, HIDDEN, generator=torch.Generator().manual_seed(8))
    prompts = [long, *_prompts(2, seed=13)]
    seen = []

    def spy(module, query, key, value, attention_mask, **kwargs):
        seen.append(key.shape[2])
        return slot_decode_attention(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register(SLOT_ATTENTION, spy)
    try:
        generations = engine.generate([Request(p, len(p), n) for p, n in zip(prompts, [20, 4, 6])])
    finally:
        AttentionInterface.register(SLOT_ATTENTION, slot_decode_attention)
    layers = len(engine.layers)
    # decode step k (k = 0..18) writes the long request's token at position 250 + k: 256 keys while that is below 256
    expected = [256 if 250 + k < 256 else 512 for k in range(19)]
    assert seen[::layers] == expected and len(seen) == 19 * layers
    assert [g.tokens for g in generations] == [_reference(model, p, n, None)[0] for p, n in zip(prompts, [20, 4, 6])]
    assert engine.cache.capacity == 1024
    assert engine.stats.positions_needed < engine.stats.positions_read < 19 * 3 * 1024


def test_a_captures_warm_up_runs_the_step_about_to_run_and_leaves_busy_slots_as_they_were():
    """On CUDA a step is captured mid-run, the first time a slot count and read length come up, after two eager warm-up
    runs. Those runs write keys and values: they run the step about to run, so they write what it writes. Here every
    new (slots, read length) runs the warm-up first, as a capture would; the tokens stay those of `generate`."""
    model = _tiny_lm("qwen2")
    prompts = [torch.randn(250, HIDDEN, generator=torch.Generator().manual_seed(8)), *_prompts(3, seed=17)]
    limits = [20, 5, 9, 12]
    engine = _engine(model, [], 3)
    eager, warmed = engine._decode_step_for, []

    def step_for(slots, span, state):
        if (slots, span) not in warmed:
            warmed.append((slots, span))
            engine._warm_up(state.to(engine.device), span)
        return eager(slots, span, state)

    engine._decode_step_for = step_for
    generations = engine.generate([Request(p, len(p), n) for p, n in zip(prompts, limits)])
    assert warmed == [(3, 256), (3, 512)]  # a second capture mid-run, with every slot busy
    assert [g.tokens for g in generations] == [_reference(model, p, n, None)[0] for p, n in zip(prompts, limits)]


def test_a_steps_own_memory_and_its_float32_scores_by_hand():
    """What a decode step needs beside the cache, per slot, for 4 query heads over 2 key heads: float32 scores and
    weights for every query head over the capacity, the bool mask, float32 logits and log-probabilities; and the
    log-probability of a bfloat16 model's token is taken over float32 logits, as `generate` scores it."""
    model = _tiny_lm("qwen2")
    engine = _engine(model, [], 2)
    assert engine.decode_bytes_per_slot(256) == 2 * 4 * 256 * 4 + 256 + 2 * 97 * 4
    engine.lm_head = torch.nn.Linear(HIDDEN, 97, bias=False).to(torch.bfloat16)
    hidden = torch.randn(3, HIDDEN, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    token, logprob = engine._choose(hidden)
    logits = (hidden.float() @ engine.lm_head.weight.float().T).to(torch.bfloat16).float()  # bf16 matmul, then float32
    assert logprob.dtype == torch.float32
    assert token.tolist() == logits.argmax(-1).tolist()
    assert logprob.tolist() == pytest.approx(logits.log_softmax(-1).max(-1).values.tolist(), abs=1e-6)


def test_a_request_whose_embeddings_are_not_its_length_is_refused():
    model = _tiny_lm("qwen2")
    with pytest.raises(ValueError, match="a request of 9 tokens came with 7 embeddings"):
        _engine(model, [], 1).generate([Request(torch.randn(7, HIDDEN), 9, 3)])
