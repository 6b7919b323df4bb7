"""Serving the champion: request payloads → model inputs, scoring, the model holder that follows the
`@champion` alias, the inference log and the FastAPI app factory (`models.serving.app.create_app`).

The CLI entry (`flywheel serve-model`) and the batch scoring flow live in `flows/`; nothing here
reads the environment or a settings file.
"""
