"""Evaluation on top of the library: speaker verification on trial lists, emotion recognition from frozen
embeddings, and their figures. Training never imports this package; it is handed an evaluator hook instead
(`verification.trial_list_evaluator`)."""
