"""`python -m extract +model=<head> ...` (and the same under torchrun)."""

import sys

import hydra
from omegaconf import DictConfig

from extract.errors import ConfigError


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from extract.runner import run  # after Hydra parsed the command line, so --help stays fast

    try:
        run(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
