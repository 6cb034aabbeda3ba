"""Floor 1, the ground: atomic files and checksums, locks, the device, memory estimates, setting checks.
Imports nothing of the lab."""
