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

__version__ = "0.1.0"
