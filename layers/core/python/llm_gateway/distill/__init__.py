"""Distillation: a tenant's own traffic into a dataset, a fine-tuned student, its evaluation
(docs/distillation.md)."""
