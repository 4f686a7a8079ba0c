"""Data sources, readers, layouts, cleaning and the split."""
