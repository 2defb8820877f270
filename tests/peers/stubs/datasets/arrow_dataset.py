from datasets import Dataset
