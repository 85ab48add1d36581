"""The writer's rules, on its own: one folder, one set of head options."""

import json

import pytest

from extract.errors import ConfigError
from extract.writer import OutputWriter


@pytest.mark.parametrize("left_behind", ["s-000.tar", "s-000.tar.partial"])
def test_other_options_are_refused_over_finished_or_unfinished_shards(tmp_path, left_behind):
    """A killed run leaves only `.partial` shards: resuming them with other options would mix two settings."""
    folder = tmp_path / "probe"
    OutputWriter(folder, options={"fps": 2.0})
    (folder / left_behind).write_bytes(b"")
    with pytest.raises(ConfigError, match=r"holds records made with other options of this head \(fps: 2.0 -> 8.0\)"):
        OutputWriter(folder, options={"fps": 8.0})
    assert json.loads((folder / "options.json").read_text()) == {"fps": 2.0}  # the refused run changed nothing
    OutputWriter(folder, options={"fps": 2.0})  # the same options resume


def test_a_folder_without_shards_takes_the_new_options(tmp_path):
    folder = tmp_path / "probe"
    OutputWriter(folder, options={"fps": 2.0})
    OutputWriter(folder, options={"fps": 8.0})
    assert json.loads((folder / "options.json").read_text()) == {"fps": 8.0}
