"""Ray Train and Tune wiring shared by the model families."""
