"""Data curation: source converters, the synthetic generator, deduplication and decontamination, the mix."""
