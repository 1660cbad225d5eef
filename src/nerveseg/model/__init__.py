"""Stage 2, model: the networks (functions returning uncompiled Keras models) and their losses."""
