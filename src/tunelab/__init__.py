"""tunelab: adapt language models to a task and prove which adaptation is worth it.

The package is the shared code of the pipeline stages in ``stages/``:

- ``config``   typed, frozen dataclasses for each section of params.yaml, and their loader
- ``io``       atomic writes and line-numbered readers
- ``data``     fetching, reading, cleaning and splitting datasets
- ``prompts``  promptsource-style templates, chat rendering, tokenisation reports
- ``models``   where base models come from and how they are saved
- ``tracking`` MLflow runs for stages
"""

__version__ = "0.1.0"
