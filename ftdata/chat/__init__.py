"""Chats: records become `Example`s (`formats`), examples are rendered by a prompt template or
the model's chat template (`render`), and the template's markup is found by probing it
(`markers`, `probes`, `stops`) so that each assistant turn can be located (`turns`, `fallback`).
"""
