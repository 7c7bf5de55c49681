"""Training engine: runtime, optimisers, schedules, train loop, checkpoints, extraction."""
