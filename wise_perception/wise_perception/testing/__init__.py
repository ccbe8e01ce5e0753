"""Test helpers: tiny, randomly initialised stand-ins for the real checkpoints (no model hub needed)."""
