"""Prediction: the fold x test-time-augmentation ensemble that training, submission and serving share."""
