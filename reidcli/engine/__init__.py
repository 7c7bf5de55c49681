"""The training engine: runtime (device, ranks, autocast), optimisers, schedules, the step, the
loop, checkpoints and exact resume, and the extraction that validation shares with inference.
It imports nothing of the verbs, the API or the CLI."""
