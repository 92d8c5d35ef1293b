"""Chats: examples rendered by a prompt template or the model's chat template (`render`,
`prompts`), user Jinja run bounded (`sandbox`), the template's markup found by probing it
(`markers`, `probes`, `stops`), contents as lists of parts where a template needs them
(`contents`), each assistant turn located (`turns` for a record, `locator` for one turn,
`fallback`, `sentinels`, `long_records`), and span-level supervision (`supervision`).
"""
