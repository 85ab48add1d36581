"""The runner's own rules, unit by unit (end-to-end runs are in test_end_to_end.py and test_reliability.py)."""

import torch

from extract.heads import Head
from extract.runner import batch_size_on


class _Captioner(Head):
    name = "captioner"
    device_batch_size = 64


def test_a_heads_batch_size_is_its_own_else_its_gpu_queue_else_the_runs():
    head = _Captioner()
    head.batch_size = None
    assert batch_size_on(head, torch.device("cuda", 0), 4) == 64
    assert batch_size_on(head, torch.device("cpu"), 4) == 4
    head.batch_size = 8
    assert batch_size_on(head, torch.device("cuda", 0), 4) == 8
    plain = Head()
    plain.batch_size = None
    assert batch_size_on(plain, torch.device("cuda", 0), 3) == 3
