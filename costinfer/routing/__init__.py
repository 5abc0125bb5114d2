"""Which model answers each row: routing across candidates, the cascade and its checks, the provider of a model."""
