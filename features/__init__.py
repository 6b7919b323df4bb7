"""The feature pipeline: ingest, clean, validate, transform and label.

Pure code plus thin I/O adapters; no orchestration framework is imported here.
"""
