"""The library's build: `ftdata.build`, `prepare`, `build_sft_dataset` (`api`), a build in memory
(`local`), its content key (`fingerprint`) and cache (`cache`), an OUT folder published whole
(`publish`, `export`), Ray shards (`shards`) and loading what a build wrote (`load`).
"""
