"""The typed config sections, composed from conf/ and validated."""
