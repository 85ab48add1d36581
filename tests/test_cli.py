"""The command line: clear one-line errors before any work, Hydra sweeps, in-process run(cfg)."""

import json

import pytest

from conftest import compose_cfg, read_records, run_cli, write_shard
from extract.runner import run


def _one_line_error(result, *words):
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    for word in words:
        assert word in lines[0], lines[0]


def test_without_a_head_it_lists_the_heads():
    _one_line_error(run_cli("tar_folder=shards"), "+model=<head>", "probe", "llava_video")


def test_missing_folder_and_unreadable_csv_are_one_line_errors(tmp_path):
    _one_line_error(run_cli("+model=probe", f"tar_folder={tmp_path / 'nope'}"), "is not a folder")
    _one_line_error(run_cli("+model=probe", "tar_folder=shards", f"dataset_csv={tmp_path / 'nope.csv'}"), "nope.csv cannot be read")
    assert not (tmp_path / "outputs").exists()


def test_unknown_names_are_one_line_errors_with_a_suggestion():
    _one_line_error(run_cli("+model=probe", "tar_folder=shards", "batchsize=3"), "unknown option 'batchsize'", "batch_size")
    _one_line_error(run_cli("+model=prob", "tar_folder=shards"), "unknown head 'prob'", "probe")
    _one_line_error(run_cli("+model=[probe,av_sink]", "tar_folder=shards"), "unknown head 'av_sink'", "av_sync")
    _one_line_error(run_cli("+model=probe", "tar_folder=shards", "model.fsp=2"), "unknown option of head probe 'fsp'", "fps")
    _one_line_error(run_cli("+model=[probe,av_sync]", "tar_folder=shards", "model.llava_video.num_frames=8"),
                    "not among the chosen heads")
    _one_line_error(run_cli("+model=[probe,av_sync]", "tar_folder=shards", "model.fps=2"), "name the head: model.probe.fps")
    _one_line_error(run_cli("+model=[probe,av_sync]", "tar_folder=shards", "model.min_sound_dbfs=2"),
                    "model.av_sync.min_sound_dbfs")


def test_option_values_of_the_wrong_type_or_range_are_one_line_errors(tmp_path):
    out = f"output_dir={tmp_path / 'out'}"
    _one_line_error(run_cli("+model=probe", "tar_folder=shards", out, "model.fps=abc"), "head probe: fps='abc' is not a number")
    _one_line_error(run_cli("+model=probe", "tar_folder=shards", out, "model.max_frames=0"), "max_frames must be at least 1")
    _one_line_error(run_cli("+model=probe", "tar_folder=shards", out, "model.batch_size=abc"), "head probe: batch_size='abc'")
    _one_line_error(run_cli("+model=probe", "tar_folder=shards", out, "batch_size=abc"), "batch_size='abc' is not a whole number")
    _one_line_error(run_cli("+model=probe", "tar_folder=shards", out, "num_workers=-1"), "num_workers=-1")
    _one_line_error(run_cli("+model=probe", "tar_folder=shards", out, "device=tpu"), "device='tpu' is not auto, cpu or cuda")
    _one_line_error(run_cli("+model=av_sync", "tar_folder=shards", out, "model.method=magic"), "unknown method 'magic'")
    assert not list((tmp_path / "out").glob("*/*.tar"))


def test_one_head_takes_its_options_with_or_without_its_name(tmp_path, clip_bytes):
    write_shard(tmp_path / "x.tar", [("v (0-1).mp4", clip_bytes)], gz=False)
    for n, option in enumerate(("model.fps=2", "model.probe.fps=2")):
        out = tmp_path / f"out{n}"
        result = run_cli("+model=probe", f"tar_folder={tmp_path}", f"output_dir={out}", "num_workers=0", option)
        assert result.returncode == 0, result.stderr[-2000:]
        [record] = read_records(out / "probe")
        assert record["stats"]["frames_sampled"] == 2  # 2 fps over 1 s


def test_multirun_sweeps(tmp_path, clip_bytes):
    write_shard(tmp_path / "x.tar.gz", [("v (0-1).mp4", clip_bytes)])
    result = run_cli("--multirun", "+model=probe", f"tar_folder={tmp_path}", "num_workers=0",
                     f"output_dir={tmp_path / 'out'}", "model.batch_size=1,2")
    assert result.returncode == 0, result.stderr[-2000:]
    # the second job (batch sizes do not change the records) found the shard complete and wrote nothing twice
    assert len(list((tmp_path / "out" / "probe").glob("summary-*.json"))) == 2
    assert len(read_records(tmp_path / "out" / "probe")) == 1


def test_run_is_callable_in_process_with_composed_config(tmp_path, clip_bytes):
    write_shard(tmp_path / "x.tar", [("a.b (0-1).mp4", clip_bytes), ("a.b (1-2).mp4", clip_bytes)], gz=False)
    cfg = compose_cfg("+model=probe", f"tar_folder={tmp_path}", f"output_dir={tmp_path / 'out'}", "num_workers=0",
                      "wandb.mode=disabled")
    summary = run(cfg)
    assert summary["this_run"]["by_status"] == {"ok": 2}
    assert json.loads((tmp_path / "out" / "probe" / "summary.json").read_text())["output_totals"]["records"] == 2


def test_pipe_shards_and_brace_patterns(tmp_path, clip_bytes):
    for i in range(2):
        write_shard(tmp_path / f"p-{i}.tar", [(f"v{i} (0-1).mp4", clip_bytes)], gz=False)
    out = tmp_path / "out"
    cfg = compose_cfg("+model=probe", f'shards="pipe:cat {tmp_path}/p-0.tar"', f"output_dir={out}", "num_workers=0",
                      "wandb.mode=disabled")
    assert run(cfg)["this_run"]["by_status"] == {"ok": 1}
    cfg = compose_cfg("+model=probe", f'shards="{tmp_path}/p-{{0..1}}.tar"', f"output_dir={out}", "num_workers=0",
                      "wandb.mode=disabled")
    summary = run(cfg)
    assert summary["this_run"]["records"] == 1 and summary["output_totals"]["records"] == 2  # p-0 was already done


def test_a_rerun_with_other_head_options_is_refused_and_a_sweep_gets_a_folder_per_job(tmp_path, clip_bytes):
    write_shard(tmp_path / "x.tar", [("v (0-1).mp4", clip_bytes)], gz=False)
    out = tmp_path / "out"
    first = run_cli("+model=probe", f"tar_folder={tmp_path}", f"output_dir={out}", "model.fps=2", "model.batch_size=1")
    assert first.returncode == 0, first.stderr[-2000:]
    again = run_cli("+model=probe", f"tar_folder={tmp_path}", f"output_dir={out}", "model.fps=2", "model.batch_size=3")
    assert again.returncode == 0, again.stderr[-2000:]  # the batch size does not change the records
    _one_line_error(run_cli("+model=probe", f"tar_folder={tmp_path}", f"output_dir={out}", "model.fps=8"),
                    "holds records made with other options", "fps: 2 -> 8", "another output_dir")
    assert [r["stats"]["frames_sampled"] for r in read_records(out / "probe")] == [2]
    (tmp_path / "fresh" / "probe").mkdir(parents=True)  # what a run refused before its first record leaves
    (tmp_path / "fresh" / "probe" / "options.json").write_text('{"fps": 99.0}')
    fresh = run_cli("+model=probe", f"tar_folder={tmp_path}", f"output_dir={tmp_path / 'fresh'}", "model.fps=2")
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    sweep = run_cli("--multirun", "+model=probe", f"tar_folder={tmp_path}", "model.fps=2,8", f"output_dir={tmp_path}/sweep/fps_${{model.probe.fps}}")
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    assert [r["stats"]["frames_sampled"] for r in read_records(tmp_path / "sweep" / "fps_8" / "probe")] == [8]
    # the sweep's own record sits apart, not in a folder named as the default fps would name a run
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == [".hydra", "fps_2", "fps_8"]
    assert [p.name.split("-")[0] for p in (tmp_path / "sweep" / ".hydra").iterdir()] == ["multirun"]


def test_typos_with_hydras_plus_are_caught_too(tmp_path):
    from extract.cli import normalise_overrides
    from extract.errors import ConfigError

    _one_line_error(run_cli("+model=probe", "tar_folder=shards", "+output_dri=/tmp/elsewhere"),
                    "unknown option 'output_dri'", "did you mean output_dir?")
    for typo, words in {"+model.av_sync.max_ofset=1.0": ("unknown option of head av_sync 'max_ofset'", "max_offset"),
                        "++batchsize=2": ("unknown option 'batchsize'", "batch_size")}.items():
        try:
            normalise_overrides(["+model=[probe,av_sync]", "tar_folder=shards", typo])
        except ConfigError as exc:
            assert all(word in str(exc) for word in words), str(exc)
        else:
            raise AssertionError(f"{typo} passed")
    # a known key given with + is the key itself (Hydra would refuse to add what exists)
    assert normalise_overrides(["+model=probe", "+output_dir=out", "+model.fps=2"]) == ["+model=probe", "output_dir=out",
                                                                                        "model.probe.fps=2"]


def test_a_folder_without_shards_is_an_error_that_says_where_they_are(tmp_path):
    (tmp_path / "empty").mkdir()
    _one_line_error(run_cli("+model=probe", f"tar_folder={tmp_path / 'empty'}"), "holds no shards (*.tar.gz, *.tgz, *.tar)")
    nested = tmp_path / "nested"
    (nested / "day1").mkdir(parents=True)
    write_shard(nested / "day1" / "a.tar", [("v (0-1).mp4", b"x")], gz=False)
    _one_line_error(run_cli("+model=probe", f"tar_folder={nested}"), "holds no shards", "1 sit in its subfolders",
                    str(nested / "day1" / "a.tar"), "shards=")


def test_the_command_line_is_normalised_as_hydra_needs_it():
    import pytest

    from extract.cli import normalise_overrides
    from extract.errors import ConfigError

    assert normalise_overrides(["model=probe", "wandb.mode=disabled"]) == ["+model=probe", "wandb.mode=disabled"]
    assert normalise_overrides(["--multirun", "+model=probe", "model.fps=2,8"]) == ["--multirun", "+model=probe", "model.probe.fps=2,8"]
    with pytest.raises(ConfigError, match=r"unknown option 'wandb.mod' \(did you mean wandb.mode\?\)"):
        normalise_overrides(["+model=probe", "wandb.mod=disabled"])
    with pytest.raises(ConfigError) as grammar:
        normalise_overrides(["+model=probe", "model.fps=[1,"])
    assert "\n" not in str(grammar.value)


def test_the_entry_point_exits_with_the_documented_codes(monkeypatch, tmp_path, capsys):
    import pytest

    import extract.__main__ as entry
    from extract import runner
    from extract.errors import ConfigError
    from extract.writer import OutputError

    cfg = compose_cfg("+model=probe", "tar_folder=shards", f"output_dir={tmp_path}")
    for raised, code, words in ((ConfigError("bad option"), 2, "error: bad option"), (OutputError("disk full"), 1, "error: disk full"),
                                (KeyboardInterrupt(), 130, "error: interrupted; run the same command again to resume")):
        def fail(cfg, raised=raised):
            raise raised
        monkeypatch.setattr(runner, "run", fail)
        with pytest.raises(SystemExit) as exit_info:
            entry.main.__wrapped__(cfg)
        assert exit_info.value.code == code and capsys.readouterr().err.strip() == words


def test_a_sweeps_output_pattern_is_not_made_as_a_folder(tmp_path, monkeypatch):
    import extract.__main__ as entry

    monkeypatch.chdir(tmp_path)
    entry.check_arguments(["+model=probe", "output_dir=out/fps_${model.probe.fps}"])
    entry.check_arguments(["+model=probe", "output_dir=a,b"])
    assert not (tmp_path / "out").exists() and not (tmp_path / "a,b").exists()
    entry.check_arguments(["+model=probe", "output_dir=plain"])
    assert (tmp_path / "plain").is_dir()


def test_help_says_how_to_use_it_heads_options_and_examples():
    import re

    from conftest import CONF

    result = run_cli("--help")
    assert result.returncode == 0
    text = result.stdout
    assert "powered by Hydra" not in text and "+model=<head>" in text and "tar_folder=DIR" in text
    heads = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
    assert f"model: {', '.join(heads)}" in text  # every head, from conf/model
    for key in ("output_dir", "dataset_csv", "batch_size", "num_workers", "device", "decode_timeout", "wandb"):
        assert re.search(rf"^{key}:", text, re.M), key  # and every option with its default
    import shlex

    from extract.cli import normalise_overrides

    section = text.split("Examples:")[1].split("\n\n")[0]
    examples = [shlex.split(line) for line in section.splitlines() if line.strip().startswith("python -m extract ")]
    assert len(examples) >= 3  # each is a command the checker accepts, as a user types it
    for example in examples:
        normalise_overrides(example[3:])
    # the way --help gives to see a head's options: each with its default from the head's YAML
    from omegaconf import OmegaConf

    shown = run_cli("+model=probe", "--cfg", "job")
    assert shown.returncode == 0, shown.stderr
    composed = OmegaConf.create(shown.stdout)
    assert composed.model.probe == OmegaConf.load(CONF / "model" / "probe.yaml")


def test_the_launchers_help_exits_zero_and_a_bad_call_says_where_help_is():
    import subprocess
    import sys

    from conftest import REPO

    shown = subprocess.run([sys.executable, "-m", "extract.launch", "--help"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert shown.returncode == 0 and "--nproc_per_node" in shown.stdout and " -- " in shown.stdout and not shown.stderr
    wrong = subprocess.run([sys.executable, "-m", "extract.launch", "+model=probe"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1 and "--help" in wrong.stderr


def test_export_and_report_pointed_at_an_input_folder_say_so(tmp_path):
    import subprocess
    import sys

    from conftest import REPO, make_clip

    write_shard(tmp_path / "part-00000.tar.gz", [("a (0-1).mp4", make_clip(seconds=1))])
    (tmp_path / "shards").mkdir()
    write_shard(tmp_path / "shards" / "s.tar", [("a (0-1).mp4", make_clip(seconds=1))])
    (tmp_path / "nested" / "part1").mkdir(parents=True)  # a folder of shard folders
    write_shard(tmp_path / "nested" / "part1" / "s.tar", [("a (0-1).mp4", make_clip(seconds=1))])
    for tool in ("extract.export", "extract.report"):
        for folder in (tmp_path, tmp_path / "shards", tmp_path / "nested"):
            done = subprocess.run([sys.executable, "-m", tool, str(folder)], capture_output=True, text=True, cwd=REPO, timeout=120)
            assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
            assert "looks like an input folder" in done.stderr and "unknown head" not in done.stderr
    # one head's folder of a run: the run is the folder above it
    run_cli("+model=probe", f"tar_folder={tmp_path / 'shards'}", f"output_dir={tmp_path / 'out'}", "num_workers=0")
    done = subprocess.run([sys.executable, "-m", "extract.export", str(tmp_path / "out" / "probe")], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2 and f"the folder above it: {tmp_path / 'out'}" in done.stderr, done.stderr


@pytest.mark.parametrize("pattern, fixed", [("out/fps_${model.probe.fps}", "out"), ("out/${model.probe.fps}", "out"),
                                            ("/data/runs/${model.probe.fps}/x", "/data/runs"), ("${model.probe.fps}", ".")])
def test_a_sweeps_record_goes_to_the_fixed_part_of_its_output(pattern, fixed):
    """README: the sweep's own record goes to the output's fixed part (`out/.hydra/multirun-<time>/`), whether the
    pattern's interpolation starts a folder name or follows a prefix."""
    from pathlib import Path

    from extract.cli import sweep_record

    [record] = sweep_record(["--multirun"], ["+model=probe", "model.probe.fps=2,8", f"output_dir={pattern}"])
    assert record == f"hydra.sweep.dir={Path(fixed) / '.hydra' / 'multirun-${now:%Y-%m-%d_%H-%M-%S}'}"


def test_the_launcher_example_in_help_is_a_command_the_launcher_takes():
    import shlex

    from torch.distributed.run import get_args_parser

    from extract.cli import normalise_overrides

    text = run_cli("--help").stdout
    [line] = [line.strip() for line in text.splitlines() if line.strip().startswith("python -m extract.launch")]
    words = shlex.split(line)[3:]
    assert "--" in words, line  # the launcher needs its separator
    split = words.index("--")
    get_args_parser().parse_args([*words[:split], "extract"])  # torchrun's options as torchrun reads them
    normalise_overrides(words[split + 1:])
