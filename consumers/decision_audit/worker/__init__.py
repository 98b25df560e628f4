"""The worker: consume, check, follow chains, store, commit offsets."""
