"""obliviate: make a language model forget selected knowledge, and prove it."""

__version__ = "0.1.0"
