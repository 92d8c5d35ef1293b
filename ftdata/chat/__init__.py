"""Chats: examples rendered by a prompt template or the model's chat template (`render`,
`prompts`), user Jinja run bounded (`sandbox`), the template's markup found by probing it
(`markers`, `probes`, `stops`, `parts`) so that each assistant turn can be located (`turns`,
`fallback`, `regions`, `pieces`), and span-level supervision (`supervision`).
"""
