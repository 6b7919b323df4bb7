"""Drift and data-quality checks after deployment (Evidently)."""
