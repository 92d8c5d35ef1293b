"""Input: records read from files, folders, hub caches and DataFrames (any format, compressed or
not), within the read bounds (`readers`, `compressed`, `delimited`); tokenizers and the bundled
model (`resources`); YAML configs (`config_files`); URIs (`store`); other tools' dataset declarations,
LLaMA-Factory's dataset_info.json and axolotl's `datasets:` (`declarations`, over `llamafactory`, `axolotl`,
`declared`).

Nothing here knows chat templates or labels; the record engine (`ftdata.run`) sits above it.
"""
