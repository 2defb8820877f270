"""Results: documents (JSON), their content identity and keys, and the store that holds them."""
