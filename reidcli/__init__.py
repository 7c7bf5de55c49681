"""reid: person re-identification toolkit (LightMBN and baselines) driven by one `reid` command."""

__version__ = "0.1.0"

import logging as _logging

# A library says nothing unless its user asks: the CLI attaches a stderr handler.
_logging.getLogger(__name__).addHandler(_logging.NullHandler())
