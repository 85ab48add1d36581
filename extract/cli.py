"""The command line before Hydra sees it: one-line errors for what Hydra would answer in a page, and
the one-head shorthand `model.<option>=...` for `model.<head>.<option>=...`."""

from __future__ import annotations

import difflib
from pathlib import Path

from omegaconf import OmegaConf

from extract.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"


def head_names() -> list[str]:
    return sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


def _parse(arguments: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_overrides(arguments)
    except Exception as exc:  # Hydra's grammar errors: its own message, on one line
        raise ConfigError(" ".join(str(exc).split())) from None


def _selected_heads(overrides) -> tuple[list[str], bool]:
    """The heads `+model=` names and whether they are swept (`+model=a,b` under --multirun)."""
    for override in overrides:
        if override.key_or_group == "model" and not override.is_delete():
            value = override.value()
            if override.is_sweep_override():
                return [str(v) for v in override.sweep_string_iterator()], True
            return ([str(v) for v in value] if isinstance(value, list) else [str(value)]), False
    return [], False


def _unknown(kind: str, name: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(f"unknown {kind} {name!r}{hint}; known: {', '.join(known)}")


def _paths(node: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        out.append(path)
        if isinstance(value, dict):
            out += _paths(value, path + ".")
    return out


# Hydra's own flags that take the next word as their value (`--cfg job` shows the composed config)
FLAGS_WITH_A_VALUE = {"--cfg", "-c", "--package", "-p", "--info", "-i", "--config-path", "-cp", "--config-name", "-cn",
                      "--config-dir", "-cd", "--experimental-rerun"}


def normalise_overrides(arguments: list[str]) -> list[str]:
    """Check the overrides against the configs and expand the one-head shorthand; ConfigError on one line."""
    flags, overrides, after_flag = [], [], False
    for argument in arguments:
        if after_flag:  # the value of Hydra's `--cfg job`, `--package x`, `--info config`...
            flags.append(argument)
            after_flag = False
        elif argument.startswith("-"):
            flags.append(argument)
            after_flag = argument in FLAGS_WITH_A_VALUE
        else:
            overrides.append(argument)
    parsed = _parse(overrides)
    heads, swept = _selected_heads(parsed)
    names = head_names()
    for head in heads:
        if head not in names:
            raise _unknown("head", head, names)
    root_paths = _paths(OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml"), resolve=False))
    options = {head: list(OmegaConf.load(CONF / "model" / f"{head}.yaml").keys()) for head in heads}
    out = []
    for argument, override in zip(overrides, parsed):
        key = override.key_or_group
        if key == "model" and not (override.is_add() or override.is_force_add() or override.is_delete()):
            argument = "+" + argument  # the group is not in the defaults list: choosing it is an addition
        if key == "model" or key.startswith("hydra"):
            out.append(argument)
            continue
        if override.is_add() or override.is_force_add():
            # `+key=` is Hydra's way to add a key the config lacks, so a typo with it would pass unseen: every key is
            # checked as if given plain, and a known one is given plain (Hydra refuses to add a key that exists)
            argument = argument.lstrip("+")
        if key.startswith("model."):
            head, _, option = key[len("model."):].partition(".")
            if head not in heads and len(heads) == 1 and not swept:  # model.<option>: the one head's option
                head, option = heads[0], key[len("model."):]
                argument = argument.replace(key, f"model.{head}.{option}", 1)
            if head not in heads:
                owners = [h for h in heads if head in options[h]]
                if owners:  # model.<option> with several heads: say whose option it is
                    raise ConfigError(f"{key}: with several heads, name the head: "
                                      f"{' or '.join(f'model.{h}.{head}' for h in owners)}")
                raise ConfigError(f"{key}: {head!r} is not among the chosen heads ({', '.join(heads) or 'none; add +model=<head>'})")
            top = option.split(".")[0]
            if top and top not in options[head]:
                raise _unknown(f"option of head {head}", top, options[head])
        elif key not in root_paths and key.split(".")[0] not in ("model",):
            raise _unknown("option", key, [p for p in root_paths if p != "hydra" and not p.startswith("hydra.")])
        out.append(argument)
    return flags + out + sweep_record(flags, out)


def sweep_record(flags: list[str], overrides: list[str]) -> list[str]:
    """Where a sweep keeps its own record (Hydra's multirun folder). By default it is under output_dir resolved with the
    defaults, so a sweep over `output_dir=out/fps_${model.probe.fps}` would leave `out/fps_4.0/.hydra/` looking like a
    run that never happened: it goes to the output's fixed part instead (`out/.hydra/multirun-<time>`)."""
    values = [arg.split("=", 1)[1] for arg in overrides if arg.startswith("output_dir=")]
    if not ({"-m", "--multirun"} & set(flags)) or not values or "${" not in values[-1] \
            or any(arg.startswith("hydra.sweep.dir=") for arg in overrides):
        return []
    fixed = str(Path(values[-1].split("${", 1)[0] + "x").parent)  # the folders before the first interpolation
    return ["hydra.sweep.dir=" + str(Path(fixed) / ".hydra" / "multirun-${now:%Y-%m-%d_%H-%M-%S}")]
