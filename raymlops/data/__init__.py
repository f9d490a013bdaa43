"""raymlops.data."""
