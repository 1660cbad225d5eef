"""Stage 1, data: read and validate the raw files, cache arrays, split folds, audit labels, synthesize stand-ins."""
