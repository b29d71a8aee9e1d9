"""Tokenizers: published VQGANs and the patch k-means tokenizer."""
