"""Records, readers, benchmark loaders (TOFU, RWKU) and chat formatting."""

from .readers import RowTable, read_prompts, read_records, read_rows, records_from_rows, write_records
from .records import DataError, QARecord
from .rwku import (RWKU_HUB, RWKU_SPLITS, ChoiceItem, TextItem, list_rwku_targets, load_rwku,
                   resolve_rwku_target)
from .tofu import TOFU_HUB, TOFU_SPLITS, load_tofu, load_tofu_idk, tofu_eval_splits

__all__ = [
    "DataError", "QARecord",
    "RowTable", "read_rows", "read_records", "records_from_rows", "write_records", "read_prompts",
    "TOFU_HUB", "TOFU_SPLITS", "load_tofu", "load_tofu_idk", "tofu_eval_splits",
    "RWKU_HUB", "RWKU_SPLITS", "ChoiceItem", "TextItem", "load_rwku", "list_rwku_targets", "resolve_rwku_target",
]
