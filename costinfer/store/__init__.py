"""The DuckDB store: runs, rows, request bodies, the response cache, embeddings and the ledger of calls."""

from costinfer.store.base import (
    ENV_STORE,
    MONEY,
    Outcome,
    Pending,
    as_store_failure,
    check_store_path,
    default_store_path,
    money,
    store_location,
)
from costinfer.store.outcomes import Writer
from costinfer.store.schema import MIGRATIONS, SCHEMA_VERSION
from costinfer.store.shared import SharedStore
from costinfer.store.store import Store

Store.open_shared_store = staticmethod(lambda url, read_only: SharedStore.open_shared(url, read_only=read_only))

__all__ = [
    "ENV_STORE",
    "MIGRATIONS",
    "MONEY",
    "SCHEMA_VERSION",
    "Outcome",
    "Pending",
    "Store",
    "Writer",
    "as_store_failure",
    "check_store_path",
    "default_store_path",
    "money",
    "store_location",
]
