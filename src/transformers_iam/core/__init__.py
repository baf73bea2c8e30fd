"""The core a transformers user needs: config, masks, attention registration, model, collator, catalog, pipeline."""
