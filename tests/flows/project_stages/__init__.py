"""A user's own stages, as a project would write them: plain functions found by import path (stages.extra)."""
