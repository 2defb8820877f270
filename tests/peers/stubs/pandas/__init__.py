"""Stub: transformer_lens.patching imports pandas at module level (DataFrame results only)."""
class DataFrame:
    def __init__(self, *a, **k): raise ImportError("pandas stub: install the real 'pandas' package")
