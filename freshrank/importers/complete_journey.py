"""Importer of the 84.51 "The Complete Journey" transactions layout (grocery purchases).

One row is one product line of a shopping basket. ``user_id`` is the household,
``item_id`` the product and ``session_id`` the basket. ``price`` is the unit price paid,
``sales_value / quantity``. ``quantity`` is not always an item count: the 84.51 sample
has quantities up to 32,623 on lines worth under 100 USD. Such rows get a tiny unit price
and are kept as delivered.

When a products table (``products.parquet`` or ``products.csv``) sits next to the
transactions file, ``category`` is the product's ``product_category``. A product missing
from it, or one without a category, gets a null category.

Rows are set aside, and counted by reason, by these rules in this order (a row counts
under the first rule it meets):

- ``missing_item_id``: product_id is empty.
- ``missing_quantity``, ``zero_quantity``: quantity is empty or 0.
- ``negative_price``: sales_value / quantity is below 0.
- ``missing_event_time``: transaction_timestamp is empty.

The default business timezone is America/New_York, where the stores are; naive
timestamps in a CSV file are read as wall-clock times of the import timezone.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from freshrank.errors import ImportFormatError
from freshrank.importers.landing import (
    SourceRows,
    first_reasons,
    id_strings,
    parse_numbers,
    parse_timestamps,
    read_table,
    to_canonical,
)

logger = logging.getLogger(__name__)

LAYOUT_COLUMNS: tuple[str, ...] = (
    "household_id",
    "store_id",
    "basket_id",
    "product_id",
    "quantity",
    "sales_value",
    "retail_disc",
    "coupon_disc",
    "coupon_match_disc",
    "week",
    "transaction_timestamp",
)
REQUIRED_COLUMNS: tuple[str, ...] = (
    "household_id",
    "basket_id",
    "product_id",
    "quantity",
    "sales_value",
    "transaction_timestamp",
)
LAYOUT = (
    "Complete Journey transactions layout: a .parquet or .csv table with columns "
    + ", ".join(LAYOUT_COLUMNS)
    + " (store_id, the discounts and week are not used)"
)

PRODUCT_COLUMNS: tuple[str, ...] = ("product_id", "product_category")
PRODUCTS_LAYOUT = "Complete Journey products layout: a table with at least the columns product_id, product_category"
PRODUCTS_FILE_NAMES: tuple[str, ...] = ("products.parquet", "products.csv")
"""Products tables looked for next to the transactions file, in this order."""

TRANSACTIONS_FILE_NAMES: tuple[str, ...] = (
    "transactions.parquet",
    "transactions_sample.parquet",
    "transactions.csv",
    "transactions_sample.csv",
)
"""Transactions files looked for when the source is a folder, in this order."""


def read_complete_journey(source: Path, timezone: str) -> SourceRows:
    """Read Complete Journey transactions into canonical purchase rows.

    Args:
        source: The transactions file (.parquet or .csv), or a folder holding one of
            ``TRANSACTIONS_FILE_NAMES``.
        timezone: Business timezone of the import; naive timestamps are read in it.

    Returns:
        Canonical rows, the number of source rows, and the rows set aside by reason.

    Raises:
        FileNotFoundError: No transactions file was found.
        ImportFormatError: Columns are missing, a value cannot be read, or the products
            table lists a product twice.
    """
    path = _transactions_path(Path(source))
    raw = read_table(path, REQUIRED_COLUMNS, LAYOUT)
    logger.info("read %d rows from %s (timezone %s)", len(raw), path, timezone)

    item_id = id_strings(raw["product_id"])
    quantity = parse_numbers(raw["quantity"], path, "quantity")
    sales_value = parse_numbers(raw["sales_value"], path, "sales_value")
    event_time = parse_timestamps(raw["transaction_timestamp"], path, "transaction_timestamp", naive_zone=timezone)
    with np.errstate(divide="ignore", invalid="ignore"):
        price = sales_value / quantity

    rules = [
        ("missing_item_id", item_id.isna()),
        ("missing_quantity", quantity.isna()),
        ("zero_quantity", quantity == 0),
        ("negative_price", price < 0),
        ("missing_event_time", event_time.isna()),
    ]
    reasons, set_aside = first_reasons(rules, len(raw))

    frame = pd.DataFrame(
        {
            "event_time": event_time,
            "user_id": id_strings(raw["household_id"]),
            "item_id": item_id,
            "event_type": "purchase",
            "quantity": quantity,
            "price": price,
            "category": _categories(path, item_id),
            "session_id": id_strings(raw["basket_id"]),
        }
    )[reasons.isna().to_numpy()]
    return SourceRows(frame=to_canonical(frame), rows_read=len(raw), set_aside=set_aside)


def _transactions_path(source: Path) -> Path:
    if not source.is_dir():
        return source
    for name in TRANSACTIONS_FILE_NAMES:
        if (source / name).is_file():
            return source / name
    raise FileNotFoundError(f"{source}: no transactions file; expected one of {list(TRANSACTIONS_FILE_NAMES)} in it")


def _categories(transactions: Path, item_id: pd.Series) -> pd.Series:
    products_path = next(
        (transactions.parent / name for name in PRODUCTS_FILE_NAMES if (transactions.parent / name).is_file()),
        None,
    )
    if products_path is None:
        logger.info("no products table next to %s; category stays null", transactions)
        return pd.Series(pd.NA, index=item_id.index, dtype="string")

    products = read_table(products_path, PRODUCT_COLUMNS, PRODUCTS_LAYOUT)
    product_id = id_strings(products["product_id"])
    repeated = product_id[product_id.duplicated() & product_id.notna()]
    if len(repeated):
        raise ImportFormatError(
            f"{products_path}: product_id {repeated.iloc[0]!r} and {len(repeated) - 1} others appear more than "
            "once, so their category is ambiguous. Keep one row per product."
        )

    known = product_id.notna().to_numpy()
    category = id_strings(products["product_category"])
    lookup = pd.Series(category.to_numpy()[known], index=product_id.to_numpy()[known])
    mapped = item_id.map(lookup)
    unknown = int((item_id.notna() & ~item_id.isin(lookup.index)).sum())
    logger.info("category from %s; %d transaction rows name a product not in it", products_path, unknown)
    return mapped.astype("string")
