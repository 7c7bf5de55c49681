"""Deployable models: ONNX and TorchScript files whose output is exactly `model.embed`.

`graph` defines what an exported file computes, `writers` produces the files, `parity` checks them
against the PyTorch model, `metadata` describes the input contract that travels with them,
`runners` loads them (and checkpoints) for `reid embed`, and `pipeline` ties export together.
"""
