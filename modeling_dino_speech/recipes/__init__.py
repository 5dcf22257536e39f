"""Recipes that sit on top of the library: the offline demo (corpus builder and report)."""
