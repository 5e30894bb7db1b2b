"""Speed benchmark of the torch engine: `python -m gpu_endpoint.bench`."""
