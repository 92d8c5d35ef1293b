"""Input: records read from files, folders, hub caches and DataFrames (any format, compressed or
not), within the read bounds (`readers`, `compressed`, `delimited`); tokenizers and the bundled
model (`resources`); YAML configs (`config_files`); URIs (`store`).

Nothing here knows chat templates or labels; the record engine (`ftdata.run`) sits above it.
"""
