"""Training recipes: DINO pre-training and iterative pseudo-labelling (imports nothing from eval at import time)."""
