"""Floor 5: the training loop and what a run is (RunConfig): splits, optimisers, progress, recorders."""
