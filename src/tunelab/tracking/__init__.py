"""MLflow runs per stage and the lineage they carry."""
