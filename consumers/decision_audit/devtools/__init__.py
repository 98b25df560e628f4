"""Developer tools: the embedded demo and the local brokers tests and demos start."""
