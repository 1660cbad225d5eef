"""nerveseg: cross-validated U-Net segmentation of the brachial plexus (Kaggle 2016).

One subpackage per pipeline stage: ``data`` -> ``model`` -> ``train`` -> ``evaluate`` -> ``submit``,
with ``track`` (MLflow) and ``tune`` (Optuna) wrapping them. The core stages import neither.
"""

__version__ = "0.1.0"
