"""`reid bench`: model size, throughput and latency in the settings asked for, and a regression
gate against a saved report (`compare` does not import torch; `measure` does)."""
