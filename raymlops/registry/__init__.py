"""raymlops.registry."""
