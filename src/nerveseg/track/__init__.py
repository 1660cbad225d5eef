"""Tracking in MLflow: the store, CV runs and submission runs. The only stage besides tune/ that imports mlflow."""
