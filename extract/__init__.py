"""extract: streaming video metadata extraction from tar shards of clips."""

__version__ = "0.1.0"
