"""Data: sources (bundled and user files), deterministic stratified splits, pixel transforms."""
