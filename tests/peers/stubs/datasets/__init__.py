"""Stub: transformer_lens imports datasets at module level only for type hints / get_dataset."""
class Dataset: pass
class IterableDataset: pass
def load_dataset(*a, **k): raise ImportError("datasets stub: install the real 'datasets' package")
