"""Input and output: reading records (any format, compressed or not), tokenizers and templates
from disk, and writing what a build makes (rows, rejects, build.json, the cache) atomically.

Nothing here knows chat templates or labels; the record engine (`ftdata.run`) sits above it.
"""
