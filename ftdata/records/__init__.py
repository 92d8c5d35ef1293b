"""Records: one raw row becomes `Example`s, its shape detected per record (`formats`), with its
tool calls, schemas and reasoning in normal form (`tools`) and its media references (`media`).
"""
