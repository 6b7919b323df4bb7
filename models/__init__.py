"""The training pipeline: ImageBind-style model, training, evaluation, registry and gate."""
