import pytest

from extract.catalog import Catalog
from extract.errors import ConfigError


def test_join_tolerates_float_noise_and_lists_rows_without_clips(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("video_id,start,end,duration\nv.1,10.0,23.01,13.01\nv.1,30,40,10\nother,0,1,1\n")
    catalog = Catalog.load(path, tolerance=0.01)
    assert catalog.match("v.1", 10.004, 23.005) == 0
    assert catalog.match("v.1", 10.5, 23.01) is None
    assert catalog.match("missing", 0, 1) is None
    assert [r["video_id"] for r in catalog.rows_without_clips([("v.1", 10.0, 23.01)])] == ["v.1", "other"]


@pytest.mark.parametrize("content", [None, "id,begin\nx,1\n", "video_id,start,end\nx,notanumber,2\n"])
def test_bad_csv_is_a_one_line_config_error(tmp_path, content):
    path = tmp_path / "d.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        Catalog.load(path, 0.01)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_an_nfd_clip_id_joins_its_nfc_row(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("video_id,start,end,duration\ncaf\u00e9,0,1,1\n", encoding="utf-8")
    assert Catalog.load(path, tolerance=0.01).match("cafe\u0301", 0, 1) == 0
