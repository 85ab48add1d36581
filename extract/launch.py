"""`python -m extract.launch [torchrun options] -- [extract arguments]`: torchrun for extract, with its errors in one line.

The command line is checked once, before any rank starts (options, heads, shards, the CSV, the checkpoints), so a bad
command is one line and exit 2 instead of one line per rank and torchrun's report of the failed ranks. Ctrl-C stops
the ranks and says so in one line (exit 130); the same command resumes. `launch/run.sh` uses it when NGPU > 1.

    python -m extract.launch --standalone --nproc_per_node 8 -- '+model=[probe,llava_video]' tar_folder=/data/shards
"""

from __future__ import annotations

import logging
import os
import sys

from extract.__main__ import LAUNCHED_BY
from extract.errors import ConfigError


def check_command(arguments: list[str]) -> list[str]:
    """The extract arguments as the ranks will get them, checked as a run checks them before any work."""
    import torch
    from hydra import compose, initialize_config_dir

    from extract.__main__ import check_arguments
    from extract.cli import CONF
    from extract.runner import check_inputs

    if {"-m", "--multirun"} & set(arguments):
        raise ConfigError("a sweep (--multirun) runs its jobs one after another: run it without the launcher, or "
                          "launch each job")
    arguments = check_arguments(arguments)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=arguments)
    _, _, heads = check_inputs(cfg)
    for head in heads.values():  # a missing checkpoint or tokenizer is found here, once
        head.open(torch.device("cpu"))
    return arguments


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    before = argv[: argv.index("--")] if "--" in argv else argv
    if "-h" in before or "--help" in before:
        print(__doc__.strip() + "\n\ntorchrun options: python -m torch.distributed.run --help; extract arguments: python -m extract --help")
        return
    if "--" not in argv:
        _fail("usage: python -m extract.launch [torchrun options] -- [extract arguments] (--help says more)", 2)
    split = argv.index("--")
    launcher, arguments = argv[:split], argv[split + 1:]
    try:
        arguments = check_command(arguments)
    except ConfigError as exc:
        _fail(str(exc), 2)

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # torchrun's notes on shutting ranks down ("Received 2 death signal"): each of its modules sets its own level
    for name in [*logging.root.manager.loggerDict, "torch.distributed.elastic"]:
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.ERROR)
    # torchrun sets one thread per rank and prints a banner saying so; the same setting without the banner
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ[LAUNCHED_BY] = "1"  # on Ctrl-C every rank stops quietly and this process says it once
    try:
        run(parse_args([*launcher, "-m", "extract", *arguments]))
    except (KeyboardInterrupt, SignalException):
        _fail("interrupted; run the same command again to resume", 130)
    except ChildFailedError as exc:
        codes = sorted({failure.exitcode for failure in exc.failures.values()})
        _fail(f"{len(exc.failures)} rank(s) failed (exit code {', '.join(map(str, codes))}); each said why above", codes[0] or 1)


def _fail(message: str, code: int) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
