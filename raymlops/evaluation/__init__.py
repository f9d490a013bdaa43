"""raymlops.evaluation."""
