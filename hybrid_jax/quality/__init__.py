"""Per-image quality: degradation suite, scorers, validation."""
