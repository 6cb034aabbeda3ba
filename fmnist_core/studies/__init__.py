"""Floor 8: studies over many runs: the seed reports, the latent sweep, the suspect-data study."""
