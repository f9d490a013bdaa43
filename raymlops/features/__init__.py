"""raymlops.features."""
