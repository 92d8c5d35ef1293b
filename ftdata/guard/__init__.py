"""Guards: what keeps a run bounded and its outputs whole, in the standard library alone.

    bounds     what a reader may take: the longest line and string, decompressed bytes
    limits     time and size limits of renders, filters and configs (`pinned` per batch)
    space      a full disk as one located `DiskFullError`
    atomic     atomic files, exclusive creation, locks
    commit     a stage's publish into OUT (loaded by path by the watchdog)
    scratch    `$TMPDIR/ftdata-<pid>-*` folders, removed when their run ends
    safeio     OUT published whole (`OutputDir`), owned output folders, input checks
    reaper     watchdogs: what a build leaves running or half-written dies or is finished with it
    inputs     what a build read, by content: declarations, digests remembered by stat, the media manifest

Nothing here imports another ftdata package but `errors` and `outcomes` (an import-linter contract).
"""
