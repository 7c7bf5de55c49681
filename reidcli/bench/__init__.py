"""`reid bench`: model size, throughput and latency in the settings asked for, and a regression
gate against a saved report.

`reidcli.bench.compare` and `reidcli.bench.table` do not import torch; `reidcli.bench.measure`
does.
"""
