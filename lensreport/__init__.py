"""lensreport: logit-lens reports for Hugging Face causal language models, as a static site."""

__version__ = "0.1.0"
