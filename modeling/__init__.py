"""Tokenizer training, a LightningModule around Hugging Face causal LMs, evaluation and generation."""
