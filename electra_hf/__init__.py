"""electra_hf: ELECTRA pre-training and fine-tuning as a Hugging Face Transformers extension."""

__version__ = "0.1.0"
