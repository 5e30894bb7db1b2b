"""Speed benchmark of the torch engine: `python -m model_server.bench`."""
