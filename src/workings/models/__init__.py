"""Models: loading a profile's tokenizer and base, QLoRA configs, cost predictions, and the tiny demo model."""
