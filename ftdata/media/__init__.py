"""Media in records: images counted from their headers and expanded with the model's own processor
rules (`processors`, `images`, `expand`, `splice`), images in packed rows (`packing`), preview and
stats markers (`inspect`); docs/vision.md. References are read from records in `ftdata.records.media`.
"""
