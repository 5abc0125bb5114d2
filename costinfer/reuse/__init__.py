"""Reuse after the exact cache: the normalized and semantic tiers, their guards, the embeddings they compare."""
