"""Tests of freshrank.importers: the three dataset formats, the landing layout and bad input."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from freshrank.errors import ImportFormatError
from freshrank.importers import DEFAULT_TIMEZONES, IMPORT_FORMATS, ImportReport, import_dataset
from freshrank.importers.landing import INCREMENT_FILE_NAME, REPORT_FILE_NAME
from freshrank.schema import INCREMENT_COLUMNS

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
UCI_FILE = DATA / "uci-online-retail" / "derived" / "online_retail.parquet"
OTTO_FILE = DATA / "otto-sample" / "train.jsonl"
CJ_FILE = DATA / "completejourney-8451" / "derived" / "transactions_sample.parquet"

RETAIL_HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
RETAIL_LINES = [
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850.0,United Kingdom",
    "536365,71053,WHITE METAL LANTERN,6,12/1/2010 8:26,3.39,17850.0,United Kingdom",
    "536365,71053,WHITE METAL LANTERN,6,12/1/2010 8:26,3.39,17850.0,United Kingdom",
    "536366,POST,POSTAGE,1,12/1/2010 9:00,18.00,12583,France",
    "C536379,22556,PLASTERS IN TIN CIRCUS PARADE,-12,12/1/2010 9:41,1.65,14527,United Kingdom",
    "536380,22730,ALARM CLOCK BAKELIKE IVORY,-3,12/2/2010 10:00,0,,United Kingdom",
    "A563186,B,Adjust bad debt,1,12/2/2010 14:51,-11062.06,,United Kingdom",
    "536381,DCGS0003,BOXED GLASS ASHTRAY,1,12/2/2010 15:00,2.46,,United Kingdom",
    "536382,gift_0001_20,Dotcomgiftshop Gift Voucher,1,12/13/2010 16:00,17.02,,United Kingdom",
    "536383,22086,PAPER CHAIN KIT 50'S CHRISTMAS,12,12/13/2010 17:00,2.55,13047,United Kingdom",
]


def _write_csv(path: Path, header: str, lines: list[str]) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def _read_landing(landing: Path) -> pd.DataFrame:
    files = sorted(landing.glob(f"*/{INCREMENT_FILE_NAME}"))
    return pd.concat([pd.read_parquet(path) for path in files], ignore_index=True)


def _day_folders(landing: Path) -> list[str]:
    return sorted(path.name for path in landing.iterdir() if path.is_dir())


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real dataset {path} is not present (expected under ../shared/data next to the repository)")
    return path


# online-retail: hand-written inputs -------------------------------------------------------


def test_online_retail_csv_rows_and_reasons(tmp_path: Path) -> None:
    source = _write_csv(tmp_path / "retail.csv", RETAIL_HEADER, RETAIL_LINES)

    report = import_dataset("online-retail", source, tmp_path / "landing")

    assert report.rows_read == 10
    assert report.rows_written == 6
    assert report.set_aside["bad_debt_adjustment"] == 1
    assert report.set_aside["non_product_stock_code"] == 3
    assert report.rows_read == report.rows_written + sum(report.set_aside.values())
    assert report.days == ["2010-12-01", "2010-12-02", "2010-12-13"]
    assert report.timezone == "UTC"


def test_online_retail_csv_values(tmp_path: Path) -> None:
    source = _write_csv(tmp_path / "retail.csv", RETAIL_HEADER, RETAIL_LINES)
    landing = tmp_path / "landing"
    import_dataset("online-retail", source, landing)

    frame = _read_landing(landing)

    assert list(frame.columns) == list(INCREMENT_COLUMNS)
    assert frame["item_id"].tolist() == ["85123A", "71053", "71053", "22556", "22730", "22086"]
    assert frame["user_id"].tolist()[:4] == ["17850", "17850", "17850", "14527"]
    assert pd.isna(frame["user_id"].iloc[4])
    assert frame["session_id"].tolist()[3] == "C536379"
    assert frame["quantity"].tolist() == [6.0, 6.0, 6.0, -12.0, -3.0, 12.0]
    assert frame["price"].tolist() == [2.55, 3.39, 3.39, 1.65, 0.0, 2.55]
    assert set(frame["event_type"]) == {"purchase"}
    assert frame["category"].isna().all()
    assert frame["event_time"].iloc[0] == pd.Timestamp("2010-12-01 08:26", tz="UTC")


def test_online_retail_keeps_duplicates(tmp_path: Path) -> None:
    source = _write_csv(tmp_path / "retail.csv", RETAIL_HEADER, RETAIL_LINES)
    landing = tmp_path / "landing"
    import_dataset("online-retail", source, landing)

    frame = _read_landing(landing)

    assert int(frame.duplicated().sum()) == 1


def test_online_retail_xlsx_matches_csv(tmp_path: Path) -> None:
    csv_source = _write_csv(tmp_path / "retail.csv", RETAIL_HEADER, RETAIL_LINES)
    table = pd.read_csv(csv_source, dtype=str, keep_default_na=False, na_values=[""])
    # Excel keeps real datetime cells and numeric CustomerIDs (17850.0) as numbers.
    table["InvoiceDate"] = pd.to_datetime(table["InvoiceDate"], format="%m/%d/%Y %H:%M")
    table["CustomerID"] = pd.to_numeric(table["CustomerID"])
    table["Quantity"] = pd.to_numeric(table["Quantity"])
    table["UnitPrice"] = pd.to_numeric(table["UnitPrice"])
    xlsx_source = tmp_path / "retail.xlsx"
    table.to_excel(xlsx_source, index=False, sheet_name="Online Retail")

    import_dataset("online-retail", csv_source, tmp_path / "from_csv")
    report = import_dataset("online-retail", xlsx_source, tmp_path / "from_xlsx")

    assert report.rows_written == 6
    pd.testing.assert_frame_equal(_read_landing(tmp_path / "from_xlsx"), _read_landing(tmp_path / "from_csv"))


def test_online_retail_xlsx_text_dates(tmp_path: Path) -> None:
    table = pd.DataFrame(
        {
            "InvoiceNo": ["536365", "536366"],
            "StockCode": ["85123A", 71053],
            "Description": ["A", "B"],
            "Quantity": [6, 2],
            "InvoiceDate": ["12/1/2010 8:26", datetime(2010, 12, 2, 9, 30)],
            "UnitPrice": [2.55, 3.39],
            "CustomerID": [17850, None],
            "Country": ["United Kingdom", "France"],
        }
    )
    source = tmp_path / "retail.xlsx"
    table.to_excel(source, index=False)

    import_dataset("online-retail", source, tmp_path / "landing")
    frame = _read_landing(tmp_path / "landing")

    assert frame["item_id"].tolist() == ["85123A", "71053"]
    assert frame["user_id"].iloc[0] == "17850"
    assert frame["event_time"].tolist() == [
        pd.Timestamp("2010-12-01 08:26", tz="UTC"),
        pd.Timestamp("2010-12-02 09:30", tz="UTC"),
    ]


def test_online_retail_iso_and_offset_dates(tmp_path: Path) -> None:
    lines = [
        "536365,85123A,A,6,2010-12-01 08:26:00,2.55,17850,United Kingdom",
        "536366,71053,B,6,2010-12-01T23:30:00+01:00,3.39,17850,United Kingdom",
        "536367,71054,C,6,2010-12-02T00:30:00Z,3.39,17850,United Kingdom",
    ]
    source = _write_csv(tmp_path / "retail.csv", RETAIL_HEADER, lines)

    report = import_dataset("online-retail", source, tmp_path / "landing")
    frame = _read_landing(tmp_path / "landing")

    assert frame["event_time"].tolist() == [
        pd.Timestamp("2010-12-01 08:26", tz="UTC"),
        pd.Timestamp("2010-12-01 22:30", tz="UTC"),
        pd.Timestamp("2010-12-02 00:30", tz="UTC"),
    ]
    assert report.days == ["2010-12-01", "2010-12-02"]


def test_online_retail_day_first_dates(tmp_path: Path) -> None:
    lines = [
        "536365,85123A,A,6,01/12/2010 08:26,2.55,17850,United Kingdom",
        "536366,71053,B,6,13/12/2010 09:00,3.39,17850,United Kingdom",
    ]
    source = _write_csv(tmp_path / "retail.csv", RETAIL_HEADER, lines)

    report = import_dataset("online-retail", source, tmp_path / "landing")

    assert report.days == ["2010-12-01", "2010-12-13"]


def test_online_retail_bad_date_names_row(tmp_path: Path) -> None:
    lines = [RETAIL_LINES[0], "536366,71053,B,6,yesterday noon,3.39,17850,United Kingdom"]
    source = _write_csv(tmp_path / "retail.csv", RETAIL_HEADER, lines)

    with pytest.raises(ImportFormatError) as caught:
        import_dataset("online-retail", source, tmp_path / "landing")

    message = str(caught.value)
    assert "retail.csv" in message
    assert "line 3" in message
    assert "'yesterday noon'" in message
    assert "InvoiceDate" in message


def test_online_retail_bad_quantity_names_row(tmp_path: Path) -> None:
    lines = [RETAIL_LINES[0], "536366,71053,B,six,12/1/2010 9:00,3.39,17850,United Kingdom"]
    source = _write_csv(tmp_path / "retail.csv", RETAIL_HEADER, lines)

    with pytest.raises(ImportFormatError, match=r"line 3: Quantity value 'six' is not a number"):
        import_dataset("online-retail", source, tmp_path / "landing")


def test_online_retail_missing_columns(tmp_path: Path) -> None:
    source = _write_csv(tmp_path / "retail.csv", "InvoiceNo,StockCode,Quantity", ["536365,85123A,6"])

    with pytest.raises(ImportFormatError) as caught:
        import_dataset("online-retail", source, tmp_path / "landing")

    message = str(caught.value)
    assert "retail.csv" in message
    assert "'InvoiceDate'" in message
    assert "'UnitPrice'" in message
    assert "'CustomerID'" in message
    assert "UCI Online Retail layout" in message


def test_online_retail_unsupported_suffix(tmp_path: Path) -> None:
    source = tmp_path / "retail.txt"
    source.write_text(RETAIL_HEADER + "\n")

    with pytest.raises(ImportFormatError, match=r"unsupported file type '\.txt'"):
        import_dataset("online-retail", source, tmp_path / "landing")


def test_online_retail_empty_source(tmp_path: Path) -> None:
    source = _write_csv(tmp_path / "retail.csv", RETAIL_HEADER, [])

    with pytest.raises(ImportFormatError, match="no rows found"):
        import_dataset("online-retail", source, tmp_path / "landing")


def test_missing_source_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        import_dataset("online-retail", tmp_path / "absent.csv", tmp_path / "landing")


# Shared behaviour ------------------------------------------------------------------------


def test_unknown_format_lists_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ImportFormatError) as caught:
        import_dataset("instacart", tmp_path / "x.csv", tmp_path / "landing")

    message = str(caught.value)
    assert "'instacart'" in message
    for name in ("online-retail", "otto", "complete-journey"):
        assert name in message


def test_format_registry_and_timezones() -> None:
    assert set(IMPORT_FORMATS) == {"online-retail", "otto", "complete-journey"}
    assert DEFAULT_TIMEZONES == {
        "online-retail": "UTC",
        "otto": "Europe/Berlin",
        "complete-journey": "America/New_York",
    }


def test_invalid_timezone_and_max_days(tmp_path: Path) -> None:
    source = _write_csv(tmp_path / "retail.csv", RETAIL_HEADER, RETAIL_LINES)

    with pytest.raises(ValueError, match="unknown timezone 'Mars/Olympus'"):
        import_dataset("online-retail", source, tmp_path / "landing", timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="max_days must be at least 1"):
        import_dataset("online-retail", source, tmp_path / "landing", max_days=0)


def test_max_days_counts_later_rows(tmp_path: Path) -> None:
    source = _write_csv(tmp_path / "retail.csv", RETAIL_HEADER, RETAIL_LINES)
    landing = tmp_path / "landing"

    report = import_dataset("online-retail", source, landing, max_days=2)

    assert report.days == ["2010-12-01", "2010-12-02"]
    assert _day_folders(landing) == ["2010-12-01", "2010-12-02"]
    assert report.rows_written == 5
    assert report.set_aside["beyond_max_days"] == 1
    assert report.rows_read == report.rows_written + sum(report.set_aside.values())


def test_landing_files_and_report(tmp_path: Path) -> None:
    source = _write_csv(tmp_path / "retail.csv", RETAIL_HEADER, RETAIL_LINES)
    landing = tmp_path / "landing"

    report = import_dataset("online-retail", source, landing)

    for day in report.days:
        assert sorted(path.name for path in (landing / day).iterdir()) == [INCREMENT_FILE_NAME]
    saved = json.loads((landing / REPORT_FILE_NAME).read_text())
    assert saved == report.to_dict()
    assert saved["format"] == "online-retail"
    assert saved["source"] == str(source)
    assert saved["rows_read"] == 10


def test_landing_parquet_schema(tmp_path: Path) -> None:
    source = _write_csv(tmp_path / "retail.csv", RETAIL_HEADER, RETAIL_LINES)
    landing = tmp_path / "landing"
    import_dataset("online-retail", source, landing)

    schema = pq.read_schema(landing / "2010-12-01" / INCREMENT_FILE_NAME)

    assert schema.names == list(INCREMENT_COLUMNS)
    assert schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    for name in ("user_id", "item_id", "event_type", "category", "session_id"):
        assert schema.field(name).type == pa.string()
    assert schema.field("quantity").type == pa.float64()
    assert schema.field("price").type == pa.float64()


def test_reimport_replaces_day_file(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    first = _write_csv(tmp_path / "first.csv", RETAIL_HEADER, RETAIL_LINES[:3])
    second = _write_csv(tmp_path / "second.csv", RETAIL_HEADER, RETAIL_LINES[:1])

    import_dataset("online-retail", first, landing)
    import_dataset("online-retail", second, landing)

    assert len(pd.read_parquet(landing / "2010-12-01" / INCREMENT_FILE_NAME)) == 1
    assert sorted(path.name for path in (landing / "2010-12-01").iterdir()) == [INCREMENT_FILE_NAME]


def test_timezone_moves_rows_to_local_day(tmp_path: Path) -> None:
    lines = ["536365,85123A,A,6,2010-12-01 23:30:00,2.55,17850,United Kingdom"]
    source = _write_csv(tmp_path / "retail.csv", RETAIL_HEADER, lines)

    report = import_dataset("online-retail", source, tmp_path / "landing", timezone="Europe/Berlin")

    assert report.days == ["2010-12-02"]


# otto -----------------------------------------------------------------------------------


def _otto_line(session: int, events: list[tuple[int, int, str]]) -> str:
    return json.dumps({"session": session, "events": [{"aid": a, "ts": t, "type": k} for a, t, k in events]})


# 2022-08-01 12:00 UTC, and 2022-08-01 22:30 UTC (00:30 on 2 August in Berlin).
NOON_MS = 1659355200000
LATE_MS = 1659393000000


def test_otto_events(tmp_path: Path) -> None:
    source = tmp_path / "train.jsonl"
    lines = [
        _otto_line(7, [(1517085, NOON_MS, "clicks"), (1517085, NOON_MS + 1000, "carts")]),
        "",
        _otto_line(8, [(42, LATE_MS, "orders")]),
    ]
    source.write_text("\n".join(lines) + "\n")
    landing = tmp_path / "landing"

    report = import_dataset("otto", source, landing)
    frame = _read_landing(landing)

    assert report.rows_read == 3
    assert report.rows_written == 3
    assert report.timezone == "Europe/Berlin"
    assert report.days == ["2022-08-01", "2022-08-02"]
    assert frame["event_type"].tolist() == ["view", "add_to_cart", "purchase"]
    assert frame["item_id"].tolist() == ["1517085", "1517085", "42"]
    assert frame["user_id"].tolist() == ["7", "7", "8"]
    assert frame["session_id"].tolist() == ["7", "7", "8"]
    assert frame["quantity"].tolist() == [1.0, 1.0, 1.0]
    assert frame["price"].isna().all()
    assert frame["category"].isna().all()
    assert frame["event_time"].iloc[0] == pd.Timestamp("2022-08-01 12:00", tz="UTC")


def test_otto_unknown_type_names_line(tmp_path: Path) -> None:
    source = tmp_path / "train.jsonl"
    lines = [_otto_line(1, [(1, NOON_MS, "clicks")]), _otto_line(2, [(2, NOON_MS, "wishlist")])]
    source.write_text("\n".join(lines) + "\n")

    with pytest.raises(ImportFormatError) as caught:
        import_dataset("otto", source, tmp_path / "landing")

    message = str(caught.value)
    assert "train.jsonl" in message
    assert "line 2" in message
    assert "'wishlist'" in message


def test_otto_invalid_json_names_line(tmp_path: Path) -> None:
    source = tmp_path / "train.jsonl"
    source.write_text(_otto_line(1, [(1, NOON_MS, "clicks")]) + "\n{not json\n")

    with pytest.raises(ImportFormatError, match=r"train\.jsonl: line 2: invalid JSON"):
        import_dataset("otto", source, tmp_path / "landing")


def test_otto_missing_keys_names_line(tmp_path: Path) -> None:
    source = tmp_path / "train.jsonl"
    source.write_text(json.dumps({"session": 1, "events": [{"aid": 1, "type": "clicks"}]}) + "\n")

    with pytest.raises(ImportFormatError) as caught:
        import_dataset("otto", source, tmp_path / "landing")

    message = str(caught.value)
    assert "line 1" in message
    assert "['ts']" in message
    assert "OTTO layout" in message


def test_otto_non_integer_aid(tmp_path: Path) -> None:
    source = tmp_path / "train.jsonl"
    source.write_text(json.dumps({"session": 1, "events": [{"aid": 1.5, "ts": NOON_MS, "type": "clicks"}]}) + "\n")

    with pytest.raises(ImportFormatError, match=r"line 1: aid value 1\.5 is not an integer"):
        import_dataset("otto", source, tmp_path / "landing")


# complete-journey -----------------------------------------------------------------------


def _cj_transactions(timestamps: list[object]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "household_id": ["2261", "2131", "511"],
            "store_id": ["309", "368", "316"],
            "basket_id": ["31198705046", "31198705046", "31198640134"],
            "product_id": ["1004906", "1033142", "9999999"],
            "quantity": [2.0, 0.0, 3.0],
            "sales_value": [5.0, 0.0, 4.5],
            "retail_disc": [0.0, 0.0, 0.5],
            "coupon_disc": [0.0, 0.0, 0.0],
            "coupon_match_disc": [0.0, 0.0, 0.0],
            "week": [1, 1, 1],
            "transaction_timestamp": timestamps,
        }
    )


def _cj_products() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "product_id": ["1004906", "1033142", "26081"],
            "department": ["PRODUCE", "DRUG GM", "GROCERY"],
            "product_category": ["POTATOES", "TOBACCO", None],
        }
    )


def test_complete_journey_rows(tmp_path: Path) -> None:
    stamps = pd.to_datetime(
        ["2017-01-01 23:30:00", "2017-01-02 08:00:00", "2017-01-02 09:00:00"]
    ).tz_localize("America/New_York")
    source = tmp_path / "transactions.parquet"
    _cj_transactions(list(stamps)).to_parquet(source)
    _cj_products().to_parquet(tmp_path / "products.parquet")
    landing = tmp_path / "landing"

    report = import_dataset("complete-journey", source, landing)
    frame = _read_landing(landing)

    assert report.rows_read == 3
    assert report.rows_written == 2
    assert report.set_aside["zero_quantity"] == 1
    assert report.timezone == "America/New_York"
    assert report.days == ["2017-01-01", "2017-01-02"]
    assert frame["user_id"].tolist() == ["2261", "511"]
    assert frame["item_id"].tolist() == ["1004906", "9999999"]
    assert frame["session_id"].tolist() == ["31198705046", "31198640134"]
    assert frame["price"].tolist() == [2.5, 1.5]
    assert frame["category"].iloc[0] == "POTATOES"
    assert pd.isna(frame["category"].iloc[1])
    assert frame["event_time"].iloc[0] == pd.Timestamp("2017-01-02 04:30", tz="UTC")


def test_complete_journey_csv_naive_times(tmp_path: Path) -> None:
    source = tmp_path / "transactions.csv"
    _cj_transactions(["2017-01-01 23:30:00", "2017-01-02 08:00:00", "2017-07-02 09:00:00"]).to_csv(source, index=False)
    landing = tmp_path / "landing"

    report = import_dataset("complete-journey", source, landing)
    frame = _read_landing(landing)

    assert report.days == ["2017-01-01", "2017-07-02"]
    assert frame["event_time"].tolist() == [
        pd.Timestamp("2017-01-02 04:30", tz="UTC"),
        pd.Timestamp("2017-07-02 13:00", tz="UTC"),
    ]
    assert frame["category"].isna().all()


def test_complete_journey_folder_source(tmp_path: Path) -> None:
    _cj_transactions(["2017-01-01 10:00:00"] * 3).to_csv(tmp_path / "transactions.csv", index=False)
    _cj_products().to_csv(tmp_path / "products.csv", index=False)

    report = import_dataset("complete-journey", tmp_path, tmp_path / "landing")
    frame = _read_landing(tmp_path / "landing")

    assert report.rows_written == 2
    assert frame["category"].iloc[0] == "POTATOES"


def test_complete_journey_duplicate_products(tmp_path: Path) -> None:
    _cj_transactions(["2017-01-01 10:00:00"] * 3).to_csv(tmp_path / "transactions.csv", index=False)
    products = pd.concat([_cj_products(), _cj_products().iloc[:1]])
    products.to_csv(tmp_path / "products.csv", index=False)

    with pytest.raises(ImportFormatError, match=r"products\.csv: product_id '1004906'"):
        import_dataset("complete-journey", tmp_path / "transactions.csv", tmp_path / "landing")


def test_complete_journey_missing_columns(tmp_path: Path) -> None:
    source = tmp_path / "transactions.csv"
    _cj_transactions(["2017-01-01 10:00:00"] * 3).drop(columns=["basket_id", "sales_value"]).to_csv(
        source, index=False
    )

    with pytest.raises(ImportFormatError) as caught:
        import_dataset("complete-journey", source, tmp_path / "landing")

    message = str(caught.value)
    assert "transactions.csv" in message
    assert "['basket_id', 'sales_value']" in message
    assert "Complete Journey transactions layout" in message


def test_report_dataclass_to_dict() -> None:
    report = ImportReport("otto", "a.jsonl", "Europe/Berlin", ["2022-08-01"], 3, 2, {"x": 1})

    assert report.to_dict() == {
        "format": "otto",
        "source": "a.jsonl",
        "timezone": "Europe/Berlin",
        "days": ["2022-08-01"],
        "rows_read": 3,
        "rows_written": 2,
        "set_aside": {"x": 1},
    }


# Real datasets ---------------------------------------------------------------------------


@pytest.mark.real_data
def test_uci_full_import(tmp_path: Path) -> None:
    landing = tmp_path / "landing"

    report = import_dataset("online-retail", _require(UCI_FILE), landing)

    assert report.rows_read == 541_909
    assert report.set_aside["bad_debt_adjustment"] == 3
    # POST 1,256, DOT 710, M 571, C2 144, D 77, S 63, ... (the three B lines are the A invoices).
    assert report.set_aside["non_product_stock_code"] == 2_992
    assert report.rows_written == 541_909 - 3 - 2_992
    assert len(report.days) == 305
    assert report.days[0] == "2010-12-01"
    assert report.days[-1] == "2011-12-09"
    assert "2011-01-01" not in report.days

    frame = _read_landing(landing)
    assert len(frame) == report.rows_written
    assert int((frame["quantity"] < 0).sum()) == 10_028
    assert int(frame["session_id"].str.startswith("C").sum()) == 8_704
    assert int(frame["user_id"].isna().sum()) == 134_005
    assert int(frame.duplicated().sum()) == 5_264
    assert not frame["item_id"].str.match(r"^\d{5}").eq(False).any()
    assert not frame["user_id"].dropna().str.contains(".", regex=False).any()


@pytest.mark.real_data
def test_uci_max_days(tmp_path: Path) -> None:
    landing = tmp_path / "landing"

    report = import_dataset("online-retail", _require(UCI_FILE), landing, max_days=3)

    assert report.days == ["2010-12-01", "2010-12-02", "2010-12-03"]
    assert _day_folders(landing) == report.days
    assert report.set_aside["bad_debt_adjustment"] == 3
    assert report.rows_read == report.rows_written + sum(report.set_aside.values())
    first_day = pd.read_parquet(landing / "2010-12-01" / INCREMENT_FILE_NAME)
    assert first_day["item_id"].iloc[0] == "85123A"
    assert first_day["user_id"].iloc[0] == "17850"


@pytest.mark.real_data
def test_otto_sample_import(tmp_path: Path) -> None:
    landing = tmp_path / "landing"

    report = import_dataset("otto", _require(OTTO_FILE), landing)
    frame = _read_landing(landing)

    assert report.rows_read == 862
    assert report.rows_written == 862
    assert frame["event_type"].value_counts().to_dict() == {"view": 800, "add_to_cart": 52, "purchase": 10}
    assert frame["user_id"].nunique() == 20
    assert frame["item_id"].nunique() == 510
    # The 28 Berlin days 2022-08-01..2022-08-28, of which 2022-08-12 has no events.
    assert report.days[0] == "2022-08-01"
    assert report.days[-1] == "2022-08-28"
    assert len(report.days) == 27
    assert "2022-08-12" not in report.days


@pytest.mark.real_data
def test_complete_journey_sample_import(tmp_path: Path) -> None:
    landing = tmp_path / "landing"

    report = import_dataset("complete-journey", _require(CJ_FILE), landing)
    frame = _read_landing(landing)

    assert report.rows_read == 75_000
    assert report.set_aside["zero_quantity"] == 416
    assert report.rows_written == 75_000 - 416
    assert len(report.days) == 364
    assert report.days[0] == "2017-01-01"
    assert report.days[-1] == "2017-12-31"
    assert "2017-12-25" not in report.days
    # 2,377 households in the source; 4 of them bought only zero-quantity lines.
    assert frame["user_id"].nunique() == 2_373
    # 222 rows name a product missing from products.parquet; 540 products have no category.
    assert int(frame["category"].isna().sum()) == 107
    assert frame["price"].min() >= 0
