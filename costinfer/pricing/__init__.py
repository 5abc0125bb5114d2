"""Money: the price catalog, costinfer.toml, what prompt caching and GPU time cost."""
