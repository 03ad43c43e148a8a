"""Dataset preparation: ingest, caption, enrich, split, preview and edit captions."""
