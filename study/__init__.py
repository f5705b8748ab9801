"""archstudy: Ray Tune studies of architectures and hyperparameters (see study/spec.py for the spec)."""
