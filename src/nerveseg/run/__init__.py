"""The pipeline's verbs as typed functions (``cross_validate``), over a ``RunStore`` that keeps what they make.

nnU-Net's ``run/``: each command in ``src/`` parses its arguments and calls one function here; the functions are
short loops of named steps. Nothing here imports MLflow or Optuna: trackers are stores and observers.
"""
