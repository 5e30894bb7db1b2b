"""Semantic cache support: CPU sentence embeddings and a trained pair verifier.

`embeddings` turns text into L2-normalised all-MiniLM-L6-v2 vectors (int8 ONNX on CPU); `verifier`
decides whether a cosine-retrieved candidate really means the same as the query, with a threshold
chosen from a target precision rather than a raw cosine number.
"""
