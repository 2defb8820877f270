from datasets import IterableDataset
