"""nerveseg: cross-validated U-Net segmentation of the brachial plexus (Kaggle 2016).

The core modules (data, model, losses, training, metrics, RLE) import neither MLflow nor
Optuna; ``tracking``, ``experiment`` and ``tuning`` wrap them.
"""

__version__ = "0.1.0"
