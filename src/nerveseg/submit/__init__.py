"""Stage 5, submission: ensembled prediction, run-length encoding and the validated submission file."""
