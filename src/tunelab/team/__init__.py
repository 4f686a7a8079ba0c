"""Working as a team: the shared DVC remote (sharing), the MLflow tracking server on PostgreSQL
(tracking_server) and the model registry (model_registry). None of it is a pipeline stage's
dependency: stages log to whatever tracking URI they are given."""
