class ConfigError(Exception):
    """A problem with the command line or the inputs, reported as one line before any work."""
