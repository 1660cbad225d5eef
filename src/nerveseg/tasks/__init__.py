"""Task-specific pipelines beside the nerve task's: training, scoring, post-processing and submission
pieces that differ per data set (``isbi2012``: EM membrane segmentation, issue 10)."""
