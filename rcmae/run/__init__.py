"""A run: its config (presets + overrides), its folder contract (paths, run.json, progress.json),
checkpoints (safe loading) and its training clips. Every stage, scorer and reader goes through here."""
