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


def test_tolerance_zero_joins_the_exact_window_and_the_boundary_joins(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("video_id,start,end,duration\nv,10.0,23.01,13.01\nw,0,2.5,2.5\n")
    exact = Catalog.load(path, tolerance=0.0)
    assert exact.match("v", 10.0, 23.01) == 0 and exact.match("w", 0.0, 2.5) == 1  # the name's numbers, as written
    assert exact.match("v", 10.0, 23.02) is None
    half = Catalog.load(path, tolerance=0.5)  # 0.5 and 0.25 are exact in binary: a gap of exactly the tolerance joins
    assert half.match("w", 0.5, 2.5) == 1 and half.match("w", 0.0, 3.0) == 1 and half.match("w", 0.0, 3.25) is None


def test_the_closest_row_wins_and_keys_join_samples(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("video_id,start,end,duration,key\nv,0,4,4,\nv,0.5,4.5,4,\n,,,7.5,000000123\n")
    catalog = Catalog.load(path, tolerance=1.0)
    assert catalog.match("v", 0.4, 4.4) == 1 and catalog.match("v", 0.1, 4.1) == 0
    assert catalog.match(None, None, None, key="000000123") == 2 and catalog.rows[2]["duration"] == 7.5
    assert catalog.match("v", 0.0, 4.0, key="not-in-the-csv") == 0  # no row for the key: the window decides
    assert [r["start"] for r in catalog.rows_without_clips([("v", 0.0, 4.0)], keys=["000000123"])] == [0.5]


def test_rows_without_a_window_never_join_a_clip_and_the_first_of_a_key_wins(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("video_id,start,end,duration,key\nv,,,3,\n,,,1,k1\n,,,2,k1\n")
    catalog = Catalog.load(path, tolerance=0.01)
    assert catalog.match("v", 0.0, 1.0) is None
    assert catalog.match(None, None, None, key="k1") == 1


def test_a_bad_value_names_its_line_and_a_file_not_in_utf8_is_one_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("video_id,start,end,duration\nv,0,1,1\nw,zero,1,1\n")
    with pytest.raises(ConfigError, match="line 3"):
        Catalog.load(path, 0.01)
    path.write_bytes("video_id,start,end,duration\ncaf\u00e9,0,1,1\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="cannot be read"):
        Catalog.load(path, 0.01)


def test_an_nfd_csv_row_joins_its_nfc_clip(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("video_id,start,end,duration\ncafe\u0301,0,1,1\n", encoding="utf-8")  # written on macOS
    catalog = Catalog.load(path, tolerance=0.01)
    assert catalog.match("caf\u00e9", 0, 1) == 0 and catalog.rows[0]["video_id"] == "caf\u00e9"
