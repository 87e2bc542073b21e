"""Features: per-item representations cached by a stage (log-DCT / DFT spectra and their statistics)."""
