"""`python -m extract +model=<head> ...` (and the same under torchrun)."""

import sys

import hydra
from omegaconf import DictConfig

from extract.errors import ConfigError


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from extract.runner import run  # after Hydra parsed the command line, so --help stays fast

    from extract.writer import OutputError

    try:
        run(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def check_output_dir_argument(argv: list[str]) -> None:
    """Hydra makes its run folder under output_dir before anything else: refuse a bad one in one line."""
    from pathlib import Path

    from extract.writer import ensure_writable

    values = [arg.split("=", 1)[1] for arg in argv if arg.startswith("output_dir=")]
    if values and "," not in values[-1]:  # a sweep's values are checked by each job
        try:
            ensure_writable(Path(values[-1]))
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)


if __name__ == "__main__":
    check_output_dir_argument(sys.argv[1:])
    main()
