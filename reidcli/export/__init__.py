"""Deployment formats: ONNX and TorchScript files whose output is exactly `model.embed`.

`graph` defines what an exported file computes, `writers` produces the files, `parity` checks them
against the PyTorch model, `metadata` describes the input contract that travels with them. The
files are read by `reidcli.inference.runners`; `reid export` itself is `reidcli.verbs.export`.
A new format is a writer here and a reader there, with its name in the recipe's `export`
section.
"""
