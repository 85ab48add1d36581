"""Planned mutations per room, for tests/mutate.py: (file, snippet that occurs once, replacement, what it breaks).

Each room names the tests that guard it: fast ones where they suffice, so a whole round fits on a 2-core machine.
"""

ROOMS: dict[str, dict] = {
    "generation": {
        "tests": ["tests/test_generation.py"],
        "mutations": [
            ("extract/generation.py", "[None, :] <= positions[:, None]", "[None, :] < positions[:, None]",
             "decode mask hides the slot's own new key"),
            ("extract/generation.py", "self.keys[layer][self.prefill_slot, :, :length] = key[0]", "pass",
             "prefill does not store the prompt's keys"),
            ("extract/generation.py", "in_flight[slot] = (index, request, generation, position + 1)",
             "in_flight[slot] = (index, request, generation, position)", "a slot's position does not advance"),
            ("extract/generation.py", "len(generation.tokens) >= request.max_new_tokens", "len(generation.tokens) > request.max_new_tokens",
             "one token past max_new_tokens"),
            ("extract/generation.py", "return generation.tokens[-1] in self.eos_ids or", "return",
             "end-of-sequence tokens ignored"),
        ],
    },
}
