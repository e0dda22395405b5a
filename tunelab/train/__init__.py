"""The one training loop and its parts (optimizers, schedules, checkpoints, metrics, plots)."""
