"""Tokens: the rendered text tokenized with offsets and labelled (`masking`), fitted to
max_length (`truncation`, `shorten`), packed (`packing`).
"""
