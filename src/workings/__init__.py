"""workings: teach small open models to show their work as ``<reasoning>…</reasoning><answer>…</answer>``.

The package is laid out by stage, each building only on the ones before it (``tests/test_layout.py``
checks this with import-linter):

- :mod:`workings.core`: the answer format, answer equivalence and Gemma chat rendering (no torch);
- :mod:`workings.data`: source converters, the synthetic generator, deduplication and the mix;
- :mod:`workings.config`: profiles (YAML) read into validated configs;
- :mod:`workings.models`: loading, QLoRA configs, cost predictions and the tiny demo model;
- :mod:`workings.train`: run folders, checkpoints and the divergence guard; SFT;
- :mod:`workings.evaluation`: generation, benchmarks, scoring, step analysis, statistics, predictions;
- :mod:`workings.report`: tables and figures of what the stages computed;
- :mod:`workings.cli`: the ``workings`` command.
"""

import logging

__version__ = "0.1.0"

# On a CPU with AVX512-BF16, bitsandbytes logs a warning when it is first imported (TRL imports PEFT,
# which imports it) that it cannot fetch a packed-layout 4-bit kernel from the Hub. workings keeps
# 4-bit weights in the plain layout (models.qlora.keep_4bit_weights_plain), so that kernel is never
# used; the warning would only reach every command's and every chapter's standard error. It is set
# here, in the package root, because any stage may be the first to import TRL or PEFT.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
