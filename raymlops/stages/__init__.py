"""One thin module per stage, wiring the libraries in data/, features/, models/, registry/, serving/."""
