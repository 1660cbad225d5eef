"""Stage 3, training: the tf.data input pipeline, one fold's training, the cross-validation summary and its plots."""
