"""Records: what one raw row of a source means, before any template or tokenizer sees it.

`preference` reads preference data (pairs for DPO and kin, unpaired records for KTO); the SFT
shapes are read by `ftdata.chat.formats` (to move here).
"""
