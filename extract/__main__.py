"""`python -m extract +model=<head> ...` (and the same under torchrun)."""

import sys

import hydra
from omegaconf import DictConfig

from extract.errors import ConfigError


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    import os

    from extract.runner import run  # after Hydra parsed the command line, so --help stays fast
    from extract.writer import OutputError

    quiet_pipe_errors_of_fd_sharing()
    try:
        run(cfg)
    except ConfigError as exc:
        fail(exc, 2)
    except OutputError as exc:
        fail(exc, 1)
    except KeyboardInterrupt:  # Ctrl-C: what was written is kept (.partial), the same command resumes
        if os.environ.get(LAUNCHED_BY) == "1":  # the launcher says it once for every rank
            sys.exit(130)
        fail("interrupted; run the same command again to resume", 130)


LAUNCHED_BY = "EXTRACT_LAUNCHER"  # set by python -m extract.launch for its ranks


def quiet_pipe_errors_of_fd_sharing() -> None:
    """On Ctrl-C the DataLoader workers die first, and multiprocessing's descriptor-sharing thread (resource_sharer's
    `_serve`) then fails on their closed pipes with a traceback that says nothing to the user."""
    import threading

    default = threading.excepthook

    def hook(args):
        if issubclass(args.exc_type, (BrokenPipeError, ConnectionResetError, EOFError)) and "_serve" in (getattr(args.thread, "name", "") or ""):
            return
        default(args)

    threading.excepthook = hook


def fail(message, code: int) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def check_arguments(argv: list[str]) -> list[str]:
    """The overrides checked (one-line errors) and expanded, and an output_dir that can be written:
    Hydra makes its run folder there before anything else."""
    from pathlib import Path

    from extract.cli import normalise_overrides
    from extract.writer import ensure_writable

    try:
        argv = normalise_overrides(argv)
        values = [arg.split("=", 1)[1] for arg in argv if arg.startswith("output_dir=")]
        if values and "," not in values[-1] and "${" not in values[-1]:  # a sweep's (or a job's own) folder: each job checks it
            ensure_writable(Path(values[-1]))
    except ConfigError as exc:
        fail(exc, 2)
    return argv


if __name__ == "__main__":
    sys.argv[1:] = check_arguments(sys.argv[1:])
    main()
