"""Serving pieces without HTTP: A/B assignment, request log and report, catalogue search, feature blocks, config."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from pydantic import ValidationError

from freshrank.config import ABConfig, Settings, load_settings
from freshrank.errors import ConfigError, RankingInputError, RequestLogError
from models.ab import RequestLog, ab_report, assign_variant, read_request_log, two_proportion_z, user_fraction
from models.serving import (
    CandidateSource,
    Catalogue,
    FeatureBlock,
    ItemSnapshot,
    _block_from_rows,
    build_catalogue,
    catalogue_from_online_retail,
    check_candidates,
    read_catalogue_file,
    serving_ready,
)

UCI_PARQUET = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "uci-online-retail" / "derived" / "online_retail.parquet"


# A/B assignment


def test_variant_stable_and_near_share():
    config = ABConfig(treatment_version="v0002-2024-01-02", treatment_share=0.2, salt="s1")
    users = [f"user-{n}" for n in range(20000)]

    first = [assign_variant(user, config) for user in users]
    second = [assign_variant(user, config) for user in users]

    assert first == second
    share = first.count("treatment") / len(users)
    assert abs(share - 0.2) <= 4 * math.sqrt(0.2 * 0.8 / len(users))


def test_variant_salt_reshuffles_users():
    users = [f"user-{n}" for n in range(2000)]
    a = {user for user in users if user_fraction(user, "salt-a") < 0.5}
    b = {user for user in users if user_fraction(user, "salt-b") < 0.5}

    overlap = len(a & b) / len(a)
    assert 0.4 < overlap < 0.6


@pytest.mark.parametrize(
    "config",
    [ABConfig(), ABConfig(treatment_version=None, treatment_share=0.5), ABConfig(treatment_version="v1", treatment_share=0.0)],
)
def test_variant_without_split_is_control(config):
    assert {assign_variant(f"u{n}", config) for n in range(200)} == {"control"}


def test_share_of_one_puts_everyone_in_treatment():
    config = ABConfig(treatment_version="v0001-2024-01-01", treatment_share=1.0)

    assert {assign_variant(f"u{n}", config) for n in range(200)} == {"treatment"}


# Request log and A/B report


def _tiny_warehouse(core_settings: Settings, core_shop, core_publish) -> Settings:
    for day, frame in core_shop().items():
        core_publish(core_settings, day, frame)
    return core_settings


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def _write_tiny_log(path: Path) -> None:
    """Four requests around the tiny shop's purchases (u1 buys i3 on 10 March 18:00, u2 buys i1 on 5 March 08:20)."""
    log = RequestLog(path, max_items=100)
    log.write(endpoint="rank", request_id="r1", user_id="u1", variant="treatment", model_version="vB", item_ids=["i3", "i1"], at=_at("2024-03-10 00:00"))
    log.write(endpoint="recommend", request_id="r2", user_id="u2", variant="control", model_version="vA", item_ids=["i2", "i4"], at=_at("2024-03-05 00:00"))
    log.write(endpoint="search", request_id="r3", user_id="u1", variant="control", model_version="vA", item_ids=["i2", "i1"], at=_at("2024-03-01 11:00"))
    log.write(endpoint="rank", request_id="r4", user_id="u2", variant="control", model_version="vA", item_ids=["i1"], at=_at("2024-03-09 12:00"))
    log.close()


def test_ab_report_counts_later_purchases(core_settings, core_shop, core_publish, tmp_path):
    settings = _tiny_warehouse(core_settings, core_shop, core_publish)
    path = tmp_path / "requests.jsonl"
    _write_tiny_log(path)

    report = ab_report(settings, horizon_hours=168, log_path=path)

    control, treatment = report.variants
    assert (control.variant, treatment.variant) == ("control", "treatment")
    assert (control.requests, control.users, control.converted_requests, control.hit_requests) == (3, 2, 1, 0)
    assert control.mean_reciprocal_rank == 0.0
    assert control.incomplete_requests == 2
    assert (treatment.requests, treatment.users, treatment.converted_requests, treatment.hit_requests) == (1, 1, 1, 1)
    assert treatment.purchased_ranked_items == 1
    assert treatment.mean_reciprocal_rank == 1.0
    assert treatment.model_versions == ["vB"]
    assert report.users_in_both_variants == 1
    assert report.hit_rate_z == pytest.approx(2.0)
    assert report.hit_rate_p_value == pytest.approx(math.erfc(2.0 / math.sqrt(2)))


def test_ab_report_horizon_bounds_purchases(core_settings, core_shop, core_publish, tmp_path):
    settings = _tiny_warehouse(core_settings, core_shop, core_publish)
    path = tmp_path / "requests.jsonl"
    _write_tiny_log(path)

    report = ab_report(settings, horizon_hours=1, log_path=path)

    assert [outcome.converted_requests for outcome in report.variants] == [0, 0]
    assert report.hit_rate_z is None


def test_ab_report_treats_hostile_ids_as_data(core_settings, core_shop, core_publish, tmp_path):
    settings = _tiny_warehouse(core_settings, core_shop, core_publish)
    path = tmp_path / "requests.jsonl"
    log = RequestLog(path, max_items=10)
    hostile = "u1'); DROP TABLE events; --"
    log.write(endpoint="rank", request_id="r1", user_id=hostile, variant="control", model_version="vA", item_ids=["i3' OR '1'='1"], at=_at("2024-03-10 00:00"))
    log.write(endpoint="rank", request_id="r2", user_id="u1", variant="control", model_version="vA", item_ids=["i3"], at=_at("2024-03-10 00:00"))
    log.close()

    report = ab_report(settings, log_path=path)

    (control,) = report.variants
    assert (control.requests, control.converted_requests, control.hit_requests) == (2, 1, 1)
    assert report.notes[-1].startswith("the log holds one variant only")


def test_request_log_cuts_items_and_reads_back(tmp_path):
    path = tmp_path / "serving" / "requests.jsonl"
    log = RequestLog(path, max_items=3)
    log.write(endpoint="rank", request_id="abc", user_id="u9", variant="control", model_version="v1", item_ids=["a", "b", "c", "d"])
    log.close()

    frame = read_request_log(path)

    assert frame["item_ids"].tolist() == [["a", "b", "c"]]
    assert str(frame["ts"].dt.tz) == "UTC"
    with pytest.raises(RequestLogError, match="closed"):
        log.write(endpoint="rank", request_id="x", user_id="u", variant="control", model_version="v1", item_ids=[])


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"ts": "2024-01-01T00:00:00+00:00"}', "missing fields"),
        (
            '{"ts": "2024-01-01T00:00:00+00:00", "request_id": "r", "endpoint": "rank", "user_id": "u", '
            '"variant": "blue", "model_version": "v", "item_ids": []}',
            "variant must be one of",
        ),
        (
            '{"ts": "yesterday", "request_id": "r", "endpoint": "rank", "user_id": "u", '
            '"variant": "control", "model_version": "v", "item_ids": []}',
            "not an ISO 8601 timestamp",
        ),
        (
            '{"ts": "2024-01-01T00:00:00", "request_id": "r", "endpoint": "rank", "user_id": "u", '
            '"variant": "control", "model_version": "v", "item_ids": []}',
            "no UTC offset",
        ),
        (
            '{"ts": "2024-01-01T00:00:00+00:00", "request_id": "r", "endpoint": "rank", "user_id": "u", '
            '"variant": "control", "model_version": "v", "item_ids": [1]}',
            "item_ids must be a list of strings",
        ),
    ],
)
def test_request_log_rejects_bad_line(tmp_path, line, problem):
    path = tmp_path / "requests.jsonl"
    good = RequestLog(path, max_items=5)
    good.write(endpoint="rank", request_id="ok", user_id="u", variant="control", model_version="v", item_ids=["i"])
    good.close()
    with open(path, "a") as handle:
        handle.write(line + "\n")

    with pytest.raises(RequestLogError, match=f"line 2: .*{problem}"):
        read_request_log(path)


def test_ab_report_without_log_says_what_to_do(core_settings):
    with pytest.raises(RequestLogError, match="no request log"):
        ab_report(core_settings)


def test_two_proportion_z_matches_hand_computation():
    z, p_value = two_proportion_z(30, 100, 45, 100)

    pooled = 75 / 200
    expected = 0.15 / math.sqrt(pooled * (1 - pooled) * (2 / 100))
    assert z == pytest.approx(expected)
    assert p_value == pytest.approx(math.erfc(expected / math.sqrt(2)))
    assert two_proportion_z(0, 10, 0, 10) is None
    assert two_proportion_z(0, 0, 1, 10) is None


# Catalogue search


def _catalogue() -> Catalogue:
    items = pd.DataFrame(
        {
            "item_id": ["i1", "i2", "i3", "i4"],
            "title": ["White hanging HEART t-light holder", "Red hearts garland", "Blue mug", None],
            "category": ["Home", None, "Kitchen", "Kitchen"],
        }
    )
    return Catalogue.build(items)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("heart", ["i1", "i2"]),
        ("HEART holder", ["i1"]),
        ("hearts", ["i2"]),
        ("kitchen", ["i3", "i4"]),
        ("kitchen mug", ["i3"]),
        ("t-light", ["i1"]),
        ("garden", []),
    ],
)
def test_catalogue_search_matches_every_word(query, expected):
    assert _catalogue().search(query) == expected


def test_catalogue_search_needs_a_word():
    with pytest.raises(RankingInputError, match="contains no word"):
        _catalogue().search("?!")


def test_catalogue_file_titles_merge_with_warehouse_categories(tmp_path):
    path = tmp_path / "catalogue.csv"
    path.write_text("item_id,title,category\ni1,Lantern,\ni9,Only in the file,Garden\n")
    warehouse = pd.DataFrame({"item_id": ["i1", "i2"], "category": ["Home", "Toys"]})

    catalogue = build_catalogue(warehouse, path)

    assert catalogue.item_ids == ("i1", "i2", "i9")
    assert catalogue.titles == ("Lantern", None, "Only in the file")
    assert catalogue.categories == ("Home", "Toys", "Garden")
    assert catalogue.search("garden") == ["i9"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("item_id,name\ni1,x\n", "lacks the columns \\['title'\\]"),
        ("item_id,title\ni1,a\ni1,b\n", "appear more than once"),
        ("item_id,title\n,a\n", "item_id is empty in data rows \\[1\\]"),
    ],
)
def test_catalogue_file_errors_name_the_file(tmp_path, content, problem):
    path = tmp_path / "catalogue.csv"
    path.write_text(content)

    with pytest.raises(ConfigError, match=f"catalogue.csv.*{problem}"):
        read_catalogue_file(path)


@pytest.mark.real_data
def test_online_retail_catalogue_finds_descriptions():
    if not UCI_PARQUET.exists():
        pytest.skip(f"UCI Online Retail not found at {UCI_PARQUET}")

    frame = catalogue_from_online_retail(UCI_PARQUET)
    catalogue = Catalogue.build(frame)

    assert frame["item_id"].is_unique
    assert frame["item_id"].str.match(r"^\d{5}").all()
    titles = dict(zip(frame["item_id"], frame["title"]))
    assert titles["85123A"] == "WHITE HANGING HEART T-LIGHT HOLDER"
    assert "85123A" in catalogue.search("hanging heart holder")
    assert "POST" not in titles


# Candidates, feature blocks, input checks


def test_candidate_source_orders_user_categories_first():
    source = CandidateSource(
        popular=("p1", "p2", "c1", "p3"),
        by_category={"A": ("c1", "c2", "c3"), "B": ("d1",)},
        user_categories={"u1": ("B", "A")},
        built_for="v1",
        newest_day="2024-01-01",
        built_at=0.0,
    )

    assert source.candidates("u1", top_categories=2, per_category=2, popular=2) == ["d1", "c1", "c2", "p1", "p2"]
    assert source.candidates("u1", top_categories=1, per_category=5, popular=0) == ["d1"]
    assert source.candidates("nobody", top_categories=3, per_category=5, popular=3) == ["p1", "p2", "c1"]


def test_snapshot_take_marks_unknown_items():
    block = FeatureBlock(
        values=np.array([[1.0, 2.0], [3.0, np.nan], [np.nan, np.nan]]),
        found=np.array([True, True, False]),
        event_ts=np.array([10.0, 20.0, np.nan]),
    )
    snapshot = ItemSnapshot(positions={"a": 0, "b": 1}, block=block, read_at=0.0)

    taken = snapshot.take(["b", "zzz", "a"])

    np.testing.assert_array_equal(taken.values, [[3.0, np.nan], [np.nan, np.nan], [1.0, 2.0]])
    assert taken.found.tolist() == [True, False, True]
    assert taken.oldest_age_s(now=30.0) == 20.0
    assert snapshot.newest_event_ts() == 20.0


def test_block_from_rows_handles_sqlite_and_redis_misses():
    stamp = datetime(2024, 1, 2, tzinfo=timezone.utc)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    rows = [
        (stamp, {"x": ValueProto(double_val=1.5), "y": ValueProto()}),
        (None, None),
        (epoch, {"x": ValueProto(), "y": ValueProto()}),
        (stamp, {"x": ValueProto(int64_val=4), "y": ValueProto(double_val=-2.0)}),
    ]

    block = _block_from_rows(rows, ["x", "y"])

    np.testing.assert_array_equal(block.values, [[1.5, np.nan], [np.nan, np.nan], [np.nan, np.nan], [4.0, -2.0]])
    assert block.found.tolist() == [True, False, False, True]
    assert block.event_ts[0] == stamp.timestamp()


@pytest.mark.parametrize(
    ("items", "limit", "problem"),
    [
        ([], None, "item_ids is empty"),
        (["a", "b", "a"], None, "repeats \\['a'\\]"),
        (["a", "b", "c"], 2, "more than serving.max_candidates \\(2\\)"),
        (["a", ""], None, "empty ids at positions \\[1\\]"),
    ],
)
def test_check_candidates_rejects(items, limit, problem):
    with pytest.raises(RankingInputError, match=problem):
        check_candidates(items, limit)


# Settings


@pytest.mark.parametrize(
    ("serving", "problem"),
    [
        ({"item_features": "cache"}, "must be 'snapshot' or 'online'"),
        ({"request_log": "/var/log/requests.jsonl"}, "relative to the home"),
        ({"catalogue": "../catalogue.parquet"}, "relative to the home"),
        ({"ab": {"treatment_share": 1.5}}, "fraction in \\[0, 1\\]"),
        ({"max_candidates": 0}, "greater than or equal to 1"),
        ({"portt": 80}, "Extra inputs are not permitted"),
    ],
)
def test_serving_config_rejects(serving, problem):
    with pytest.raises(ValidationError, match=problem):
        Settings(serving=serving)


def test_serving_config_reads_yaml(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "freshrank.yaml").write_text(
        "serving:\n  port: 9001\n  max_candidates: 200\n  ab:\n    treatment_version: v0002-2024-01-02\n    treatment_share: 0.1\n"
    )

    settings = load_settings(home)

    assert settings.serving.port == 9001
    assert settings.serving.max_candidates == 200
    assert settings.serving.ab.treatment_share == 0.1


def test_serving_ready_lists_what_is_missing(tmp_path):
    problems = serving_ready(load_settings(tmp_path / "home"))

    assert len(problems) == 3
    assert problems[0].startswith("no Feast registry")
    assert problems[1].startswith("no warehouse")
    assert problems[2].startswith("no champion deployed")


def test_ab_report_command_prints_json(core_settings, core_shop, core_publish, tmp_path):
    from typer.testing import CliRunner

    from freshrank.cli import app

    settings = _tiny_warehouse(core_settings, core_shop, core_publish)
    path = tmp_path / "requests.jsonl"
    _write_tiny_log(path)

    result = CliRunner().invoke(app, ["ab-report", "--home", str(settings.home), "--log", str(path), "--json"])

    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [row["variant"] for row in data["variants"]] == ["control", "treatment"]
    assert data["variants"][1]["hit_rate"] == 1.0
