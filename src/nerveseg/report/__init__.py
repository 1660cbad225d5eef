"""What a finished cross-validation shows a reader: its Markdown table, learning curves, galleries."""
