from datasets import load_dataset
