"""Error types shared by every stage; the CLI maps them to exit statuses."""
from __future__ import annotations


class ConfigError(Exception):
    """A usage or configuration problem (unknown key, wrong type, missing file): exit status 2.

    The message must name the file, key or row at fault.
    """


class PipelineError(Exception):
    """A failure while running (corrupt data under --strict, NaN loss, ...): exit status 1."""
