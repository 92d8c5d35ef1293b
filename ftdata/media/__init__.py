"""Media in records: images counted from their headers and expanded with the model's own processor
rules (`processors`, `images`, `expand`, `splice`), images in packed rows (`packing`), preview and
stats markers (`inspect`); audio clips' header facts and exact counts (`audio_files`,
`audio_families`); docs/vision.md. References are read from records in `ftdata.records.media`.
"""
