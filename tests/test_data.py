"""The data module's rules that a user sees in file names: each input shard's output name."""

import pytest

from extract.data import resolve_shards, shard_stem


@pytest.mark.parametrize("url, name", [
    # the README's forms, verbatim
    ("pipe:aws s3 cp s3://b/s-000.tar -", "s-000"),
    ("/data/s-000.tar", "s-000"),
    ("a.tar", "a"),
    # the other usual ones
    ("pipe:curl -s -L https://host.example/data/s-001.tar.gz", "s-001"),
    ("pipe:gsutil cat gs://bucket/clips/s-002.tgz", "s-002"),
    ("pipe:cat '/data/my shards/s-003.tar'", "s-003"),
    ("pipe:curl -s https://host.example/s-004.tar?X-Amz-Signature=abc | cat", "s-004"),
    ("https://host.example/data/s-005.tar?token=xyz", "s-005"),
    ("s3://bucket/prefix/s-006.tar.gz", "s-006"),
    ("pipe:aws s3 cp s3://bucket/prefix/shard-without-suffix -", "shard-without-suffix"),
    ("/data/dated.2024.tar.gz", "dated.2024"),
])
def test_each_shard_gets_its_own_name(url, name):
    assert shard_stem(url) == name


def test_the_readmes_pipe_and_brace_forms_give_distinct_names():
    piped = [shard_stem(f"pipe:aws s3 cp s3://b/s-{i:03d}.tar -") for i in range(3)]
    assert piped == ["s-000", "s-001", "s-002"]
    expanded = resolve_shards(None, "/data/s-{000..099}.tar")
    assert len(expanded) == 100 and [shard_stem(u) for u in expanded[:2]] == ["s-000", "s-001"]
    assert len({shard_stem(u) for u in expanded}) == 100
    assert [shard_stem(u) for u in resolve_shards(None, ["a.tar", "b.tar"])] == ["a", "b"]
