"""Batch jobs: the runner (`runner.BatchRunner`), the file format (`format`) and job status (`status`)."""
