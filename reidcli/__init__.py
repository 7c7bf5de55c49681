"""reid: person re-identification toolkit (LightMBN and baselines) driven by one `reid` command."""

__version__ = "0.1.0"
