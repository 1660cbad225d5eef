"""Stage 4, evaluation: the competition metric and post-processing decided on out-of-fold predictions."""
