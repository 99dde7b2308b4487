"""rota: a durable job queue and actor runtime for Python."""

__all__: list[str] = []
