"""Hyperparameter search with Optuna: search space, shared storage, the study. The only stage that imports optuna."""
