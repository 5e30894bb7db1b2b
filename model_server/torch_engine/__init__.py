"""The torch engine: an own decode loop for Llama-family models (see decode.py and engine.py)."""
