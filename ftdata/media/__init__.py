"""Media in records (audio here; images join from ftdata.vision): header facts, token counts, the collator's loading."""
