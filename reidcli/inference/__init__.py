"""Trained and exported models for inference: a run folder, a checkpoint, an ONNX or TorchScript
file loaded into one `Runner` (`runners`, `checkpoints`), and the embedding loop every verb
shares (`images`). A new deployment format's reader goes into `runners`."""
