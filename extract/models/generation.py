"""Generation for the captioning heads: one engine, greedy decoding with continuous batching, and the fields a
caption carries (confidence, finish reason).

A request is a prompt given as input embeddings (a clip for llava_video, a keyframe for internvl).
The engine runs the model's own modules (its decoder layers, final norm and lm_head):

1. each request is prefilled alone, unpadded, with causal attention (SDPA's flash kernel on CUDA),
   into its slot of a preallocated KV cache;
2. one decode step advances every slot at once, each at its own position (a per-slot mask over the
   cache), reading the cache only up to the longest busy slot's length (rounded up to 256); on CUDA
   that step is captured once as a CUDA graph per slot count and length and replayed;
3. a slot whose request ends (an end-of-sequence token, or max_new_tokens) is refilled at once
   with the next request;
4. each step keeps only the chosen token and its log-probability, computed on the device: one
   transfer to the device (every slot's token, position and rotary offset) and one back per step;
5. the slot count follows free memory and the KV size of a request, capped by `max_slots`; on
   out-of-memory the engine halves it and runs the unfinished requests again (greedy decoding is
   deterministic), so no request is lost.

Positions: a request may bring its own rotary positions for the prompt (Qwen-VL's multimodal rotary positions,
[3, length]) and the offset its decode positions keep from their cache positions (Qwen's rope delta), and features
its model adds to the hidden states after the first layers at the visual positions (Qwen3-VL's DeepStack).

The tokens are those of transformers' greedy `generate` run on one request at a time (tested).
"""

from __future__ import annotations

import inspect
import logging
import math
from collections import deque
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# memory kept free beside the KV cache for a prefill's activations (a 14k-token prompt, the vision tower)
PREFILL_RESERVE_BYTES = 6 * 2**30
CAPACITY_STEP = 256  # cache lengths are rounded up to this, so one captured step serves many batches


@dataclass
class Prompt:
    """What a model feeds its language model for one prompt, beyond the embeddings of its tokens."""

    embeddings: torch.Tensor  # [length, hidden]
    positions: torch.Tensor | None = None  # rotary positions [axes, length] when they are not 0..length-1 (Qwen-VL)
    position_offset: int = 0  # rotary position minus cache position for the generated tokens (Qwen-VL's rope delta)
    deepstack: list[torch.Tensor] | None = None  # added after layer i to the hidden states at `deepstack_mask` (Qwen3-VL)
    deepstack_mask: torch.Tensor | None = None  # [length] bool


@dataclass
class Request:
    """A prompt as input embeddings [length, hidden] or a `Prompt`, or a function that makes either when its slot is
    free (so only the requests in flight hold their embeddings)."""

    embeddings: torch.Tensor | Prompt | Callable[[], torch.Tensor | Prompt]
    length: int  # prompt tokens
    max_new_tokens: int


@dataclass
class Generation:
    tokens: list[int] = field(default_factory=list)  # generated ids, the end-of-sequence token included when it came
    logprobs: list[float] = field(default_factory=list)  # of each generated token, over the kept vocabulary rows


@dataclass
class EngineStats:
    decode_steps: int = 0  # decode forwards (each advances every slot)
    prefills: int = 0
    slot_steps: int = 0  # slots advanced, summed over steps (busy slots only)
    slots: int = 0  # slot count of the last run
    graphs: bool = False  # whether decode steps replayed a CUDA graph
    capture_error: str | None = None  # why a decode step could not be captured (it then ran eagerly)
    attention: str = "slot_decode_attention (SDPA, key-head groups folded into the query length)"  # the decode kernel
    positions_read: int = 0  # cache positions decode steps read, summed over slots and steps
    positions_needed: int = 0  # of those, the ones within a busy slot's own length (what an ideal kernel reads)

    def describe(self) -> str:
        """One line for a benchmark table: did graphs run, with how many slots, how many steps, through which kernel,
        and how much of the cache it read beyond each busy slot's own length."""
        graphs = "yes" if self.graphs else f"no ({self.capture_error})" if self.capture_error else "no (eager: no CUDA)"
        read = f", KV read {self.positions_read / self.positions_needed:.2f}x the busy slots' own lengths" if self.positions_needed else ""
        return (f"engine: CUDA graphs {graphs}, slots {self.slots}, decode steps {self.decode_steps}, prefills {self.prefills}, "
                f"attention {self.attention}{read}")


SLOT_ATTENTION = "extract_slot_decode"  # the name decode steps register their attention under (transformers' interface)


def slot_decode_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                          **kwargs):
    """Decode attention over the slot cache: queries [slots, q_heads, 1, d] against each slot's keys and values as they
    are stored, [slots, kv_heads, capacity, d], never expanded to the query heads (transformers' sdpa path repeats them
    for every query head when there is a mask: 7 copies of the cache for LLaVA-Video's 28 over 4 heads). The query
    heads that share a key head are folded into the query length, so SDPA is plain multi-head attention over the
    kv_heads, reading each slot's keys and values once; the slot mask [slots, 1, 1, capacity] limits every query to
    its slot's past. Query head h uses key head h // group, as repeat_kv pairs them."""
    slots, q_heads, _, dim = query.shape
    kv_heads = key.shape[1]
    grouped = query.reshape(slots, kv_heads, q_heads // kv_heads, dim)
    out = F.scaled_dot_product_attention(grouped, key, value, attn_mask=attention_mask, scale=scaling)
    return out.reshape(slots, q_heads, 1, dim).transpose(1, 2), None


def _register_slot_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(SLOT_ATTENTION, slot_decode_attention)


class SlotCache:
    """K and V of every layer for `slots` requests, [slots, kv_heads, capacity, head_dim]; what the model's attention
    layers call `update` on. In prefill it stores one request's keys in its slot and hands them back as they came (the
    attention is causal over the prompt alone); in decode it stores each slot's new key at that slot's position and
    hands back the cache up to `span` positions (the longest busy slot's length, rounded up), which the slot mask
    limits to each slot's past."""

    def __init__(self, layers: int, slots: int, kv_heads: int, head_dim: int, capacity: int, dtype, device):
        shape = (slots, kv_heads, capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.slots, self.capacity = slots, capacity
        self.active_slots = slots  # decode runs over the first `active_slots` slots
        self.prefill_slot: int | None = None
        self.positions: torch.Tensor | None = None  # [active_slots] long, during a decode step
        self.span = capacity  # the positions a decode step reads

    def update(self, key: torch.Tensor, value: torch.Tensor, layer: int, *args, **kwargs):
        if self.prefill_slot is not None:
            length = key.shape[2]
            self.keys[layer][self.prefill_slot, :, :length] = key[0]
            self.values[layer][self.prefill_slot, :, :length] = value[0]
            return key, value
        rows = torch.arange(self.active_slots, device=key.device)
        keys, values = self.keys[layer][: self.active_slots], self.values[layer][: self.active_slots]
        keys[rows, :, self.positions] = key[:, :, 0]
        values[rows, :, self.positions] = value[:, :, 0]
        return keys[:, :, : self.span], values[:, :, : self.span]


class GenerationEngine:
    """Greedy generation with continuous batching over a decoder-only language model and its lm_head.

    `language_model` is the transformers text model (embed_tokens, layers, norm, rotary_emb), `lm_head` its output
    projection; `vocab_rows` limits the log-probabilities and the argmax to the first rows of the vocabulary (the
    rows a checkpoint's authors keep), all of them when None."""

    def __init__(self, language_model, lm_head, eos_ids, max_slots: int = 32, vocab_rows: int | None = None,
                 cuda_graphs: bool = True):
        self.model, self.lm_head = language_model, lm_head
        config = language_model.config
        if "sliding_attention" in (getattr(config, "layer_types", None) or ()):
            raise ValueError("the generation engine runs full attention only; this model has sliding-window layers")
        self.config = config
        self.eos_ids = set(eos_ids)
        self.max_slots, self.vocab_rows, self.use_graphs = max_slots, vocab_rows, cuda_graphs
        self.layers = list(language_model.layers)
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        # transformers renamed the layers' cache argument (past_key_values -> cache); call them by the name they take
        parameters = inspect.signature(self.layers[0].forward).parameters
        self.cache_argument = "cache" if "cache" in parameters else "past_key_values"
        # Qwen-VL's multimodal rotary embedding takes positions on 3 axes (time, height, width)
        rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
        self.rope_axes = 3 if "mrope_section" in rope else 1
        self.cache: SlotCache | None = None
        self.graphs: dict[tuple[int, int], tuple] = {}  # (active slots, span) -> (graph, its static buffers)
        self.graph_pool = None
        self.stats = EngineStats()
        _register_slot_attention()

    # ------------------------------------------------------------------------------------------------ sizing

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def kv_bytes_per_token(self) -> int:
        """layers x (K and V) x kv heads x head dim x bytes per value."""
        return len(self.layers) * 2 * self.kv_heads * self.head_dim * torch.finfo(self.dtype).bits // 8

    def decode_bytes_per_slot(self, capacity: int) -> int:
        """What one slot's decode step needs beside its cache, at most, in one layer at a time (the step's memory is
        reused layer after layer, and kept in the captured graph's pool): the attention scores and weights in float32
        over the capacity for every query head, the mask, and the float32 logits over the vocabulary."""
        heads = self.config.num_attention_heads
        vocab = self.vocab_rows or self.lm_head.weight.shape[0]
        return 2 * heads * capacity * 4 + capacity + 2 * vocab * 4

    def slot_count(self, requests: list[Request], capacity: int) -> int:
        """As many slots as requests, at most `max_slots`, and on CUDA as many as free memory holds beside a prefill:
        each slot's cache and what its decode step needs beyond it."""
        slots = min(self.max_slots, len(requests))
        if self.device.type == "cuda":
            held = self.cache.slots * self.cache.capacity * self.kv_bytes_per_token() if self.cache else 0
            free = torch.cuda.mem_get_info(self.device)[0] + held
            per_slot = capacity * self.kv_bytes_per_token() + self.decode_bytes_per_slot(capacity)
            fits = int((free - PREFILL_RESERVE_BYTES) // per_slot)
            slots = min(slots, max(fits, 1))
        return max(slots, 1)

    def _ensure_cache(self, slots: int, capacity: int) -> None:
        if self.cache is not None and self.cache.slots >= slots and self.cache.capacity >= capacity:
            return
        self._release()
        self.cache = SlotCache(len(self.layers), slots, self.kv_heads, self.head_dim, capacity, self.dtype, self.device)

    def _release(self) -> None:
        """Drop the cache and the steps captured on it."""
        self.cache, self.graphs, self.graph_pool = None, {}, None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------------------------------------ running

    @torch.inference_mode()
    def generate(self, requests: list[Request]) -> list[Generation]:
        """Every request's greedy generation, in the requests' order."""
        results: list[Generation | None] = [None] * len(requests)
        capacity = math.ceil(max(r.length + r.max_new_tokens for r in requests) / CAPACITY_STEP) * CAPACITY_STEP
        slots = self.slot_count(requests, capacity)
        while True:
            pending = [i for i, result in enumerate(results) if result is None]
            if not pending:
                return results
            try:
                self._ensure_cache(slots, capacity)
                self._run([requests[i] for i in pending], pending, results, slots)
            except torch.cuda.OutOfMemoryError:
                if slots == 1:
                    raise
                slots //= 2
                self._release()
                log.warning("out of GPU memory in generation; running the unfinished requests again with %d slots", slots)

    def _run(self, requests: list[Request], indexes: list[int], results: list, slots: int) -> None:
        """Fill the slots, step them all, refill each as its request ends. Per step the host sends one [3, slots] tensor
        (each slot's last token, its cache position, its rotary offset) and gets one [2, slots] back (the next token and
        its log-probability); a request's tokens are read out of those when it ends."""
        self.stats.slots = slots
        queue = deque(zip(indexes, requests))
        state = torch.zeros(3, slots, dtype=torch.long)
        if self.device.type == "cuda":
            state = state.pin_memory()
        left = torch.zeros(slots, dtype=torch.long)  # tokens each busy slot may still make
        busy = torch.zeros(slots, dtype=torch.bool)
        holder: list[tuple[int, Generation, int] | None] = [None] * slots  # (index, generation, first step of its decode)
        steps: list[torch.Tensor] = []  # every decode step's [2, slots] output, on the host
        end_ids = torch.tensor(sorted(self.eos_ids), dtype=torch.long)
        while True:
            for slot in range(slots):
                while holder[slot] is None and queue:
                    index, request = queue.popleft()
                    prompt = request.embeddings() if callable(request.embeddings) else request.embeddings
                    prompt = prompt if isinstance(prompt, Prompt) else Prompt(prompt)
                    if prompt.embeddings.shape[0] != request.length:  # the cache was sized, and decode placed, by the length
                        raise ValueError(f"a request of {request.length} tokens came with {prompt.embeddings.shape[0]} embeddings")
                    token, logprob = self._prefill(prompt, slot)
                    generation = Generation([token], [logprob])
                    if token in self.eos_ids or request.max_new_tokens <= 1:
                        results[index] = generation
                        continue
                    holder[slot] = (index, generation, len(steps))
                    state[:, slot] = torch.tensor([token, request.length, prompt.position_offset])
                    left[slot], busy[slot] = request.max_new_tokens - 1, True
            if not busy.any():
                return
            longest = int(state[1][busy].max()) + 1
            span = min(math.ceil(longest / CAPACITY_STEP) * CAPACITY_STEP, self.cache.capacity)
            out = self._decode_step_for(slots, span, state)(state)
            steps.append(out)
            self.stats.decode_steps += 1
            self.stats.slot_steps += int(busy.sum())
            self.stats.positions_read += span * slots
            self.stats.positions_needed += int((state[1][busy] + 1).sum())
            tokens = out[0].long()
            left -= busy.long()
            ended = busy & (torch.isin(tokens, end_ids) | (left <= 0))
            state[0] = tokens  # an idle slot's token is never read: a refill sets it
            state[1] += busy.long()
            for slot in ended.nonzero()[:, 0].tolist():
                index, generation, first = holder[slot]
                made = torch.stack([step[:, slot] for step in steps[first:]])  # [its decode steps, 2]
                generation.tokens += made[:, 0].long().tolist()
                generation.logprobs += made[:, 1].tolist()
                results[index], holder[slot], busy[slot] = generation, None, False

    def _prefill(self, prompt: Prompt, slot: int) -> tuple[int, float]:
        hidden = prompt.embeddings.to(self.device, self.dtype)[None]
        length = hidden.shape[1]
        if prompt.positions is not None:
            rope = prompt.positions.to(self.device)[:, None, :]  # [axes, 1, length]
        else:
            rope = torch.arange(length, device=self.device)[None]
            rope = rope[None].expand(self.rope_axes, 1, length) if self.rope_axes > 1 else rope
        self.cache.prefill_slot = slot
        try:
            last = self._forward(hidden, rope, attention_mask=None, deepstack=prompt.deepstack,
                                 deepstack_mask=prompt.deepstack_mask)[:, -1]
        finally:
            self.cache.prefill_slot = None
        self.stats.prefills += 1
        token, logprob = self._choose(last)
        return int(token[0]), float(logprob[0])

    def _forward(self, hidden: torch.Tensor, rope_positions: torch.Tensor, attention_mask, deepstack=None,
                 deepstack_mask=None) -> torch.Tensor:
        """The decoder layers and the final norm, as the text model's own forward runs them, on our cache and mask;
        DeepStack features are added after the first layers as Qwen3-VL's text model adds them."""
        position_embeddings = self.model.rotary_emb(hidden, rope_positions)
        for number, layer in enumerate(self.layers):
            hidden = layer(hidden, attention_mask=attention_mask, position_ids=None, use_cache=True,
                           position_embeddings=position_embeddings, **{self.cache_argument: self.cache})
            if deepstack is not None and number < len(deepstack):
                hidden = hidden.clone()
                mask = deepstack_mask.to(hidden.device)
                hidden[0, mask] = hidden[0, mask] + deepstack[number].to(hidden.device, hidden.dtype)
        return self.model.norm(hidden)

    def _choose(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The greedy token of each row and its log-probability, as generate scores it (float32 logits)."""
        logits = self.lm_head(hidden).float()
        if self.vocab_rows is not None:
            logits = logits[..., : self.vocab_rows]
        token = logits.argmax(dim=-1)
        logprob = logits.log_softmax(dim=-1).gather(-1, token[:, None])[:, 0]
        return token, logprob

    def _decode(self, state: torch.Tensor, span: int) -> torch.Tensor:
        """One decode step over the first state.shape[1] slots, reading the cache's first `span` positions. `state`:
        each slot's last token, its cache position and its rotary offset. Returns [2, slots] float64: each slot's next
        token (exact: ids are far below 2**53) and its log-probability."""
        tokens, positions, offsets = state
        slots = tokens.shape[0]
        self.cache.active_slots, self.cache.positions, self.cache.span = slots, positions, span
        hidden = self.model.embed_tokens(tokens[:, None])
        rope = (positions + offsets)[:, None]
        if self.rope_axes > 1:
            rope = rope[None].expand(self.rope_axes, slots, 1)
        # slot s sees its cache up to its own position (its prompt, its tokens so far, the one written now)
        visible = torch.arange(span, device=tokens.device)[None, :] <= positions[:, None]
        with self._slot_attention():
            token, logprob = self._choose(self._forward(hidden, rope, visible[:, None, None, :])[:, -1])
        return torch.stack([token.double(), logprob.double()])

    def _warm_up(self, state: torch.Tensor, span: int) -> None:
        """Two eager runs of the step before its capture (lazy initialisations, allocator warm-up). They run the step
        about to run, `state`, and so write each slot's key and value at its own position, the same ones that step then
        writes: any other state would overwrite keys that busy slots still read (token 0 at position 0, say)."""
        for _ in range(2):
            self._decode(state, span)

    @contextmanager
    def _slot_attention(self):
        """Decode steps attend through `slot_decode_attention` with the slot mask, whatever the model's prefill uses."""
        before = self.config._attn_implementation
        self.config._attn_implementation = SLOT_ATTENTION
        try:
            yield
        finally:
            self.config._attn_implementation = before

    def _decode_step_for(self, slots: int, span: int, state: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The decode step for `slots` slots reading `span` positions, host tensors in and out: eager, or a CUDA graph
        captured once and replayed. `state` is the step about to run (a capture's warm-up runs it)."""
        if self.device.type != "cuda" or not self.use_graphs:
            self.stats.graphs = False
            return lambda state: self._decode(state.to(self.device), span).cpu()
        if (slots, span) not in self.graphs:
            try:
                self.graphs[slots, span] = self._capture(slots, span, state)
            except Exception as exc:  # a model whose step cannot be captured still runs, eagerly, and says so
                self.stats.capture_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("decode step not captured as a CUDA graph (%s); running it eagerly, slower", self.stats.capture_error)
                self.use_graphs = False
                return self._decode_step_for(slots, span, state)
        graph, static_state, output = self.graphs[slots, span]
        self.stats.graphs = True

        def replay(state: torch.Tensor) -> torch.Tensor:
            static_state.copy_(state, non_blocking=True)
            graph.replay()
            return output.cpu()

        return replay

    def _capture(self, slots: int, span: int, state: torch.Tensor) -> tuple:
        """Capture the decode step, mid-run: busy slots hold their requests' keys, so the warm-up runs the very step
        about to run (`_warm_up`) and writes what that step writes anyway."""
        static_state = state.to(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self._warm_up(static_state, span)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self.graph_pool is None:
            self.graph_pool = torch.cuda.graph_pool_handle()
        # thread-local capture: the DataLoader's pin-memory thread allocates pinned memory meanwhile, which the default
        # global mode forbids (the capture fails, or that thread is poisoned and the run dies on its next batch)
        with torch.cuda.graph(graph, pool=self.graph_pool, capture_error_mode="thread_local"):
            output = self._decode(static_state, span)
        return graph, static_state, output


# ---------------------------------------------------------------------------- what a caption carries




@dataclass
class Generated:
    text: str
    num_tokens: int
    confidence: float  # geometric-mean token probability, in [0, 1]
    mean_logprob: float
    finish_reason: str  # eos | length

    def fields(self) -> dict:
        return {"confidence": round(self.confidence, 6), "mean_logprob": round(self.mean_logprob, 6),
                "num_tokens": self.num_tokens, "finish_reason": self.finish_reason}


def left_pad(sequences: list[torch.Tensor], pad_id: int) -> dict:
    """A batch of token sequences padded on the left (generation continues every row from the right),
    as a tokenizer pads a batch of prompts."""
    longest = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), longest), pad_id, dtype=sequences[0].dtype)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, longest - len(sequence):] = sequence
        attention_mask[row, longest - len(sequence):] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def greedy_generate(model, tokenizer, inputs: dict, max_new_tokens: int, vocab_rows: int | None = None
                    ) -> tuple[list[Generated], torch.Tensor]:
    """Generate for a left-padded batch with transformers' `generate`; each row's text is cut at its first end-of-sequence
    token. With `vocab_rows`, the rows past it are suppressed, so the tokens and the log-probabilities come from the
    first rows alone (as the engine's `vocab_rows`).

    Returns the generations and the log-probabilities of every generated token ([rows, steps]).
    """
    total = model.get_output_embeddings().weight.shape[0]
    suppress = {"suppress_tokens": list(range(vocab_rows, total))} if vocab_rows is not None and vocab_rows < total else {}
    # A static cache: the same tokens and scores as the dynamic one (tested). On an H100 with LLaVA-Video at 13.4k prompt
    # tokens (transformers 5.17, measured) a decode step took 34.5 ms against 76.6 ms with a dynamic cache at batch 1, and
    # the same (73 / 69 ms) at batch 8. transformers would also torch.compile the step (13.6 ms at batch 1) but compiles
    # again for each new batch shape, tens of seconds each: off, so a run's speed does not depend on its batches' shapes.
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, output_scores=True,
                            return_dict_in_generate=True, cache_implementation="static", disable_compile=True, **suppress)
    logprobs = model.compute_transition_scores(output.sequences, output.scores, normalize_logits=True)
    # given token ids, the output repeats them first; given embeddings alone, it holds the new tokens only
    generated = output.sequences[:, inputs["input_ids"].shape[1]:] if "input_ids" in inputs else output.sequences
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    return [summarise(tokenizer, tokens, token_logprobs, eos_ids) for tokens, token_logprobs in zip(generated.tolist(), logprobs)], logprobs


def summarise(tokenizer, tokens: list[int], token_logprobs: torch.Tensor, eos_ids: set[int]) -> Generated:
    """The text up to the first end-of-sequence token and the confidence of the tokens before it."""
    ended = next((i for i, t in enumerate(tokens) if t in eos_ids), None)
    length = len(tokens) if ended is None else ended
    mean = float(token_logprobs[:length].float().mean()) if length else float("-inf")
    return Generated(tokenizer.decode(tokens[:length], skip_special_tokens=True).strip(), length,
                     math.exp(mean) if length else 0.0, mean, "eos" if ended is not None else "length")


def combined_confidence(parts: list[Generated]) -> tuple[float, float]:
    """Confidence over several generations: the geometric-mean probability of all their tokens."""
    tokens = sum(p.num_tokens for p in parts)
    if not tokens:
        return 0.0, float("-inf")
    mean = sum(p.mean_logprob * p.num_tokens for p in parts if p.num_tokens) / tokens
    return float(torch.tensor(mean).exp()), mean


# Qwen's chat format, the one LLaVA-Video's `qwen_1_5` conversation template produces
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'video' %}<video>\n{% elif part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen_chat_template(image_placeholder: str = "<image>") -> str:
    """The same template with another placeholder for images (InternVL's `<IMG_CONTEXT>`)."""
    return QWEN_CHAT_TEMPLATE.replace("<image>\n", image_placeholder + "\n")
