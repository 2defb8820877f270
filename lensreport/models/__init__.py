"""Models: references (Hub, folder, GGUF, package), loading, head discovery, tokens, limits."""
