"""Floor 7: runs as the lab serves them: train-or-load, the job queue, recipes, the starter set, bundles."""
