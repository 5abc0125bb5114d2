"""Where heavy work runs besides this process: embeddings and self-hosted servers on Ray."""
