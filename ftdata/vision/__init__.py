"""Vision-language data: images in records, counted and expanded with the model's own processor (docs/vision.md)."""
