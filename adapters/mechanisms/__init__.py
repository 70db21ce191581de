"""The mechanisms of the family table (adapters/table.py): one file per way a DiT computes its RoPE tables."""
