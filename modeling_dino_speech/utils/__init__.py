"""Small helpers the package's layers share (nothing here imports the rest of the package)."""
