"""Media in records, one seam for every medium (docs/media.md): each kind is a `medium.Medium` (header
facts and the family's count: `images`; `audio`, on `audio_files` (a clip's length from its header) and
`audio_families` (each family's count rule)), the one family table keyed by processor class
(`families`), processor folders without torchvision (`processors`), expansion, splicing and the
per-record check (`expand`, `splice`), the rows' `media` column and its packing (`column`), preview and stats markers
(`inspect`). References are read from records in `ftdata.records.media`; the collator, the only
place pixels and samples exist, is `ftdata.train.media_collator`.
"""
