"""raymlops.pipeline."""
