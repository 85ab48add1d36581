import sys


class ConfigError(Exception):
    """A problem with the command line or the inputs, reported as one line before any work."""


def or_exit(call):
    """`call()`; a ConfigError it raises becomes one line on stderr and exit code 2 (the tools' command lines)."""
    try:
        return call()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
