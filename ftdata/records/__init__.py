"""Records: what one raw row of a source means, before any template or tokenizer sees it.

formats       one row -> `Example`s (SFT), its shape detected per record
tools         tool calls, tool schemas, reasoning and template kwargs in normal form
media         media references and placeholders in records
preference    preference data: pairs for DPO and kin (`Pair`), unpaired records for KTO (`Unpaired`)
preference_formats, scores   the preference shapes read into two whole conversations; scored lists
"""
