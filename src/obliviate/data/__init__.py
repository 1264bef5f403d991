"""Records, readers, benchmark loaders (TOFU, RWKU) and chat formatting."""

from .records import DataError, QARecord

__all__ = ["DataError", "QARecord"]
