"""workings: teach small open models to show their work as ``<reasoning>…</reasoning><answer>…</answer>``."""

__version__ = "0.1.0"
