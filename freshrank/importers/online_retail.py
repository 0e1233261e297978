"""Importer of the UCI Online Retail layout: one row per invoice line of a gift-ware shop.

Every line is a purchase. Cancellation lines (invoices starting with ``C``) and other
negative quantities stay as purchases with a negative quantity: ingestion sets returns
apart, not the importer. Exact duplicate lines are kept for the same reason.

Rows are set aside, and counted by reason, by these rules, applied in this order (a row
counts under the first rule it meets):

- ``missing_item_id``: StockCode is empty.
- ``bad_debt_adjustment``: the invoice starts with ``A`` ("Adjust bad debt" lines).
- ``non_product_stock_code``: StockCode does not start with five digits. In the UCI file
  these are service lines such as POST, DOT, M, m, D, S, B, C2, CRUK, PADS, BANK CHARGES,
  AMAZONFEE, DCGS... and gift_0001_... codes.
- ``missing_quantity``, ``zero_quantity``: Quantity is empty or 0.
- ``negative_price``: UnitPrice is below 0.
- ``missing_event_time``: InvoiceDate is empty.

The UCI file labels its timestamps UTC, but they follow UK wall-clock time. The calendar
dates are the same either way, so the default business timezone is UTC. Naive timestamps
in CSV or Excel files are read as UTC.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

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
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)
REQUIRED_COLUMNS: tuple[str, ...] = ("InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID")
LAYOUT = (
    "UCI Online Retail layout: a .parquet, .csv or .xlsx table with columns "
    + ", ".join(LAYOUT_COLUMNS)
    + " (Description and Country are not used)"
)

PRODUCT_STOCK_CODE = r"^\d{5}"
"""Pattern of product StockCodes: five digits, sometimes followed by letters (``85123A``)."""

BAD_DEBT_PREFIX = "A"
"""Invoice prefix of the "Adjust bad debt" accounting lines."""


def read_online_retail(source: Path, timezone: str) -> SourceRows:
    """Read an Online Retail table into canonical purchase rows.

    Args:
        source: A .parquet, .csv or .xlsx file in the UCI Online Retail layout.
        timezone: Business timezone of the import. It does not change how naive
            timestamps are read: those are UTC in this layout.

    Returns:
        Canonical rows, the number of source rows, and the rows set aside by reason.

    Raises:
        ImportFormatError: Columns are missing, or a Quantity, UnitPrice or InvoiceDate
            value cannot be read (the error names the row and the value).
    """
    source = Path(source)
    raw = read_table(source, REQUIRED_COLUMNS, LAYOUT)
    logger.info("read %d rows from %s (timezone %s)", len(raw), source, timezone)

    invoice = id_strings(raw["InvoiceNo"])
    stock_code = id_strings(raw["StockCode"])
    quantity = parse_numbers(raw["Quantity"], source, "Quantity")
    price = parse_numbers(raw["UnitPrice"], source, "UnitPrice")
    event_time = parse_timestamps(raw["InvoiceDate"], source, "InvoiceDate", naive_zone="UTC")

    rules = [
        ("missing_item_id", stock_code.isna()),
        ("bad_debt_adjustment", invoice.str.startswith(BAD_DEBT_PREFIX).fillna(False)),
        ("non_product_stock_code", ~stock_code.str.contains(PRODUCT_STOCK_CODE).fillna(True)),
        ("missing_quantity", quantity.isna()),
        ("zero_quantity", quantity == 0),
        ("negative_price", price < 0),
        ("missing_event_time", event_time.isna()),
    ]
    reasons, set_aside = first_reasons(rules, len(raw))
    _log_non_product_codes(stock_code, reasons)

    frame = pd.DataFrame(
        {
            "event_time": event_time,
            "user_id": id_strings(raw["CustomerID"]),
            "item_id": stock_code,
            "event_type": "purchase",
            "quantity": quantity,
            "price": price,
            "category": pd.Series(pd.NA, index=raw.index, dtype="string"),
            "session_id": invoice,
        }
    )[reasons.isna().to_numpy()]
    return SourceRows(frame=to_canonical(frame), rows_read=len(raw), set_aside=set_aside)


def _log_non_product_codes(stock_code: pd.Series, reasons: pd.Series) -> None:
    codes = stock_code[reasons == "non_product_stock_code"]
    if len(codes):
        logger.info("non-product StockCodes set aside (most frequent): %s", codes.value_counts().head(10).to_dict())
