"""The core every stage shares, free of torch: the answer format, answer equivalence, Gemma chat rendering."""
