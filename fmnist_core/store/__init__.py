"""Floor 6: the disk store of trained runs (models_cache/): entries and their checks, checkpoints, prune."""
