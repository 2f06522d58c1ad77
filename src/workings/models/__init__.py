"""Models: loading a profile's tokenizer and base, QLoRA configs, cost predictions, and the tiny demo model."""

import logging

# bitsandbytes warns at import, on CPUs with AVX512-BF16, that it cannot fetch a packed-layout kernel
# from the Hub. workings keeps 4-bit weights in the plain layout (models.qlora.keep_4bit_weights_plain),
# so that kernel is never used and the warning is noise on every command.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
