"""The ranking service over real HTTP: uvicorn on 127.0.0.1, a replayed home, the SQLite online store.

``ServiceSuite`` contains the tests. ``TestServiceSqlite`` runs them on SQLite and
tests/test_service_redis.py on a real redis-server. Expected scores come from an independent
path: the newest row per entity in the offline Parquet partitions (what materialization
wrote online), scored with ``models.training.predict``.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import uvicorn
import xgboost as xgb

from freshrank.config import ABConfig, Settings, load_settings, save_settings
from freshrank.feature_store import materialize_day, model_feature_names, newest_feature_day, open_store
from freshrank.features import ENTITY_KEYS, FEATURE_VIEWS, TIMESTAMP_COLUMNS, epoch_us, feature_timestamp, with_days_since
from freshrank.increments import landed_days
from freshrank.records import write_record
from freshrank.synthetic import ShopSpec, generate_shop
from models.ab import LOG_FIELDS, assign_variant, read_request_log, request_log_path
from models.registry import ModelRegistry
from models.service import create_app
from models.serving import CATEGORY_VIEW, ITEM_VIEW, PAIR_VIEW, USER_VIEW, FeatureLayout, OnlineFeatureReader, rank_items
from models.training import predict

SHOP = ShopSpec(days=4, users=150, items=60, seed=3)
CATALOGUE_TITLES = ("Red heart lantern", "White hearts garland", "Blue enamel mug")
"""Titles written to the test catalogue for the three most popular items, in popularity order."""
STARTUP_TIMEOUT_S = 120
POLL_TIMEOUT_S = 60

_BASE_HOMES: dict[str, Path] = {}


# Homes


def base_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build, once per test session, a home with four replayed days of a small synthetic shop."""
    if "base" not in _BASE_HOMES:
        from orchestration.replay import replay

        home = tmp_path_factory.mktemp("serving-base") / "home"
        settings = load_settings(home)
        generate_shop(settings.landing_dir, SHOP)
        runs = replay(settings, landed_days(settings.landing_dir))
        failed = [run.day for run in runs if not run.success]
        assert not failed, f"the daily loop failed on {failed}"
        _BASE_HOMES["base"] = home
    return _BASE_HOMES["base"]


def copy_home(base: Path, target: Path, *, redis: str | None = None) -> Settings:
    """Copy a built home; with ``redis``, switch its online store to Redis and materialize every day there."""
    shutil.copytree(base, target, ignore=shutil.ignore_patterns("dagster", "landing", "staging"))
    settings = load_settings(target)
    if redis is not None:
        settings = settings.model_copy(update={"online_store": settings.online_store.model_copy(update={"type": "redis", "connection_string": redis})})
        save_settings(settings)
        settings = load_settings(target)
        # Without the copied SQLite file, a read that missed Redis would fail instead of passing.
        (settings.feast_dir / "online.db").unlink()
        store = open_store(settings)
        for day in landed_days(base / "landing"):
            materialize_day(settings, day, store)
    write_catalogue_titles(settings)
    return settings


def write_catalogue_titles(settings: Settings) -> list[str]:
    """Give the three most popular items titles in the home's catalogue file; return their ids."""
    items = popular_items(settings)[: len(CATALOGUE_TITLES)]
    path = settings.home / settings.serving.catalogue
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"item_id": items, "title": list(CATALOGUE_TITLES)}).to_parquet(path, index=False)
    return items


# Independent expectations


def warehouse_events(settings: Settings) -> pd.DataFrame:
    """Return all published events as a frame."""
    import duckdb

    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        return con.execute("SELECT user_id, item_id, event_type, event_time, event_day, category FROM events").fetchdf()
    finally:
        con.close()


def popular_items(settings: Settings) -> list[str]:
    """Items by distinct users over the popularity window, then purchases, then id (pandas, not the service's SQL)."""
    events = window_events(settings)
    stats = events.groupby("item_id").agg(
        users=("user_id", "nunique"), purchases=("event_type", lambda kinds: int((kinds == "purchase").sum()))
    )
    stats = stats.reset_index().sort_values(["users", "purchases", "item_id"], ascending=[False, False, True])
    return stats["item_id"].tolist()


def window_events(settings: Settings) -> pd.DataFrame:
    events = warehouse_events(settings)
    newest = pd.Timestamp(events["event_day"].max())
    first = newest - pd.Timedelta(days=settings.serving.recommend.popularity_window_days - 1)
    days = pd.to_datetime(events["event_day"])
    return events[(days >= first) & (days <= newest)]


def expected_recommend_candidates(settings: Settings, user_id: str) -> list[str]:
    """Popular items of the user's top categories, then popular items overall."""
    config = settings.serving.recommend
    events = window_events(settings)
    ranked = popular_items(settings)
    item_category = (
        events.dropna(subset=["category"]).sort_values("event_time").groupby("item_id")["category"].last().to_dict()
    )
    mine = events[(events["user_id"] == user_id) & events["category"].notna()]
    counts = mine.groupby("category").size().reset_index(name="events")
    top = counts.sort_values(["events", "category"], ascending=[False, True])["category"].head(config.top_categories)
    chosen: dict[str, None] = {}
    for category in top:
        in_category = [item for item in ranked if item_category.get(item) == category]
        chosen.update(dict.fromkeys(in_category[: config.items_per_category]))
    chosen.update(dict.fromkeys(ranked[: config.popular_items]))
    return list(chosen)


@lru_cache(maxsize=8)
def latest_offline_rows(offline_dir: Path, view: str) -> pd.DataFrame:
    """Return the newest row per entity over a view's offline partitions: what the online store holds."""
    frames = [pd.read_parquet(path) for path in sorted((offline_dir / view).glob("*.parquet"))]
    rows = pd.concat(frames, ignore_index=True).sort_values("event_timestamp", kind="stable")
    return rows.drop_duplicates(list(ENTITY_KEYS[view]), keep="last").reset_index(drop=True)


def offline_frame(settings: Settings, user_id: str, item_ids: list[str], overrides: dict | None = None) -> pd.DataFrame:
    """Build the scoring rows of one request from the offline partitions (left joins keep the candidate order)."""
    frame = pd.DataFrame({"user_id": [user_id] * len(item_ids), "item_id": item_ids})
    newest = epoch_us(feature_timestamp(newest_feature_day(settings), settings.zone))
    for view in FEATURE_VIEWS:
        rows = (overrides or {}).get(view)
        if rows is None:
            rows = latest_offline_rows(settings.offline_dir, view)
        # Days since count to the newest feature day the online store reflects, or to a
        # row's own timestamp when it is newer (a row written after the watermark).
        row_stamps = pd.to_datetime(rows["event_timestamp"], utc=True).map(epoch_us).to_numpy(dtype="float64")
        rows = with_days_since(rows, np.maximum(row_stamps, newest))
        frame = frame.merge(rows.drop(columns=list(TIMESTAMP_COLUMNS)), on=list(ENTITY_KEYS[view]), how="left")
    return frame


def offline_scores(settings: Settings, version: str, user_id: str, item_ids: list[str], overrides: dict | None = None) -> dict[str, float]:
    """Score a request offline with a registry version; return item id -> score."""
    booster = ModelRegistry(settings.registry_dir).load(version)
    frame = offline_frame(settings, user_id, item_ids, overrides)
    scores = predict(booster, frame, model_feature_names(settings))
    return dict(zip(item_ids, scores.tolist()))


def busy_user(settings: Settings) -> tuple[str, list[str]]:
    """Return the user with most user x item rows and those items."""
    pairs = latest_offline_rows(settings.offline_dir, PAIR_VIEW)
    pairs = pairs[pairs["ui_last_event_epoch_us"].notna()]
    user = pairs.groupby("user_id").size().sort_values(ascending=False, kind="stable").index[0]
    return str(user), sorted(pairs.loc[pairs["user_id"] == user, "item_id"].astype(str))


def request_candidates(settings: Settings) -> tuple[str, list[str]]:
    """Return a request of the busy user's own items, popular items and one item without any events."""
    user, own = busy_user(settings)
    items = list(dict.fromkeys(own[:10] + popular_items(settings)[:25]))
    return user, items + ["no-such-item"]


# Running the service


class RunningService:
    """uvicorn serving ``create_app(settings)`` on a free 127.0.0.1 port in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> RunningService:
        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the ranking service did not start; see the log output above")
            time.sleep(0.01)  # poll interval while uvicorn runs the lifespan startup
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()

    def client(self) -> Client:
        return Client(self.port)


class Client:
    """A keep-alive HTTP/1.1 client (``http.client``) for one thread."""

    IDLE_RECONNECT_S = 2.0
    """Idle seconds after which the connection is reopened: uvicorn closes idle keep-alive connections after 5 s."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.last_used = time.monotonic()

    def call(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        """Send a request; dict and list bodies go as JSON, str bodies as they are. Return status and parsed body."""
        payload = body if body is None or isinstance(body, str) else json.dumps(body)
        headers = {"content-type": "application/json"} if payload is not None else {}
        if time.monotonic() - self.last_used > self.IDLE_RECONNECT_S:
            self.connection.close()
        self.connection.request(method, path, payload, headers)
        response = self.connection.getresponse()
        data = response.read().decode()
        self.last_used = time.monotonic()
        content_type = response.getheader("content-type", "")
        return response.status, json.loads(data) if content_type.startswith("application/json") else data

    def ok(self, method: str, path: str, body: object = None) -> dict:
        status, data = self.call(method, path, body)
        assert status == 200, f"{method} {path} answered {status}: {data}"
        return data


def wait_for(condition, what: str, timeout: float = POLL_TIMEOUT_S):
    """Poll ``condition`` until it returns a true value; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)  # poll interval


def champion_of(settings: Settings) -> str:
    version = ModelRegistry(settings.registry_dir).champion()
    assert version is not None
    return version


def other_version(settings: Settings) -> str:
    """Return the newest registered version other than the champion with the champion's features."""
    registry = ModelRegistry(settings.registry_dir)
    champion = registry.champion()
    features = registry.metadata(champion)["feature_columns"]
    same = [v for v in registry.versions() if v != champion and registry.metadata(v)["feature_columns"] == features]
    return same[-1]


def assert_ranked_like_offline(response: dict, expected: dict[str, float]) -> None:
    """Every candidate once, each score equal to its offline score, highest first."""
    ranked = [entry["item_id"] for entry in response["items"]]
    scores = np.array([entry["score"] for entry in response["items"]])
    assert sorted(ranked) == sorted(expected)
    np.testing.assert_allclose(scores, [expected[item] for item in ranked], rtol=1e-6, atol=1e-9)
    assert np.all(np.diff(scores) <= 0)


# The suite


class ServiceSuite:
    """Service tests; a subclass provides the class-scoped ``home`` fixture (one online store)."""

    @pytest.fixture(scope="class")
    def service(self, home: Settings):
        with RunningService(home) as running:
            yield running

    @pytest.fixture(scope="class")
    def client(self, service: RunningService) -> Client:
        return service.client()

    def test_rank_matches_offline_scoring(self, home, client):
        user, items = request_candidates(home)
        champion = champion_of(home)
        before = time.time()
        response = client.ok("POST", "/rank", {"user_id": user, "item_ids": items})
        after = time.time()

        assert response["model_version"] == champion
        assert response["variant"] == "control"
        assert_ranked_like_offline(response, offline_scores(home, champion, user, items))
        assert response["unknown_user"] is False
        assert response["unknown_item_ids"] == ["no-such-item"]
        users = latest_offline_rows(home.offline_dir, USER_VIEW)
        user_ts = users.loc[users["user_id"] == user, "event_timestamp"].iloc[0].timestamp()
        age = response["features"][USER_VIEW]["age_s"]
        assert before - user_ts <= age <= after - user_ts
        assert response["features"][ITEM_VIEW]["source"] == "snapshot"
        assert response["features"][PAIR_VIEW]["rows_found"] >= 1
        assert response["features"][CATEGORY_VIEW]["rows_found"] >= 1

    def test_rank_cold_start_user(self, home, client):
        items = popular_items(home)[:20]
        response = client.ok("POST", "/rank", {"user_id": "never-seen-user", "item_ids": items})

        assert response["unknown_user"] is True
        assert response["features"][USER_VIEW]["age_s"] is None
        assert response["features"][PAIR_VIEW]["rows_found"] == 0
        assert response["features"][CATEGORY_VIEW]["rows_found"] == 0
        assert_ranked_like_offline(response, offline_scores(home, champion_of(home), "never-seen-user", items))

    def test_rank_items_lists_unknown_ids(self, home):
        items = popular_items(home)[:3]
        ranking = rank_items(home, "never-seen-user", [*items, "no-such-item"])
        assert ranking.unknown_user is True
        assert ranking.unknown_item_ids == ("no-such-item",)
        assert sorted(item for item, _ in ranking.items) == sorted([*items, "no-such-item"])

    def test_reader_matches_feast_sdk(self, home):
        user, items = request_candidates(home)
        layout = FeatureLayout.from_settings(home)
        reader = OnlineFeatureReader(home, layout)
        categories = [category for category in reader.categories.of(items) if category is not None]
        assert categories
        entities = {"user_id": [user] * len(items), "item_id": items, "category": categories + ["c01"] * (len(items) - len(categories))}
        for view in FEATURE_VIEWS:
            block = reader.read(view, entities)
            keys = {key: entities[key] for key in ENTITY_KEYS[view]}
            refs = [f"{view}:{name}" for name in layout.view_columns[view]]
            sdk = reader.store.get_online_features(features=refs, entity_rows=keys).to_dict()
            sdk_values = np.array([[np.nan if value is None else value for value in sdk[name]] for name in layout.view_columns[view]]).T
            np.testing.assert_array_equal(block.values, sdk_values.astype(float), err_msg=view)

    def test_recommend_ranks_candidate_source(self, home, client):
        user, _ = busy_user(home)
        candidates = expected_recommend_candidates(home, user)
        response = client.ok("GET", f"/recommend/{user}?k=5")

        assert response["candidates"] == len(candidates)
        assert len(response["items"]) == 5
        expected = offline_scores(home, champion_of(home), user, candidates)
        best = sorted(expected.values(), reverse=True)[:5]
        np.testing.assert_allclose([entry["score"] for entry in response["items"]], best, rtol=1e-6, atol=1e-9)
        for entry in response["items"]:
            assert entry["item_id"] in expected
            assert entry["score"] == pytest.approx(expected[entry["item_id"]], rel=1e-6)

    def test_recommend_unknown_user_gets_popular_items(self, home, client):
        response = client.ok("GET", "/recommend/never-seen-user")

        config = home.serving.recommend
        assert response["candidates"] == min(config.popular_items, len(popular_items(home)))
        assert len(response["items"]) == home.serving.default_k
        assert response["unknown_user"] is True

    def test_search_titles_and_categories(self, home, client):
        titled = popular_items(home)[: len(CATALOGUE_TITLES)]
        user, _ = busy_user(home)

        hearts = client.ok("GET", f"/search?q=HEART&user_id={user}&k=10")
        assert hearts["matches"] == 2
        assert sorted(entry["item_id"] for entry in hearts["items"]) == sorted(titled[:2])
        red = client.ok("GET", f"/search?q=heart%20red&user_id={user}")
        assert [entry["item_id"] for entry in red["items"]] == [titled[0]]

        events = warehouse_events(home)
        category = events["category"].dropna().iloc[0]
        latest = events.dropna(subset=["category"]).sort_values("event_time").groupby("item_id")["category"].last()
        in_category = sorted(latest[latest == category].index)
        found = client.ok("GET", f"/search?q={category}&user_id={user}&k=100")
        assert found["matches"] == len(in_category)
        assert sorted(entry["item_id"] for entry in found["items"]) == in_category
        assert_ranked_like_offline(found, offline_scores(home, champion_of(home), user, in_category))

        nothing = client.ok("GET", f"/search?q=zzzz-nothing&user_id={user}")
        assert nothing["matches"] == 0
        assert nothing["items"] == []

    @pytest.mark.parametrize(
        ("method", "path", "body", "field"),
        [
            ("POST", "/rank", {"item_ids": ["i1"]}, "user_id"),
            ("POST", "/rank", {"user_id": 7, "item_ids": ["i1"]}, "user_id"),
            ("POST", "/rank", {"user_id": "u1", "item_ids": "i1"}, "item_ids"),
            ("POST", "/rank", {"user_id": "u1", "item_ids": []}, "item_ids"),
            ("POST", "/rank", {"user_id": "u1", "item_ids": ["i1", 2]}, "item_ids[1]"),
            ("POST", "/rank", {"user_id": "u1", "item_ids": [f"i{n}" for n in range(1001)]}, "item_ids"),
            ("POST", "/rank", {"user_id": "u" * 129, "item_ids": ["i1"]}, "user_id"),
            ("POST", "/rank", {"user_id": "u1", "item_ids": ["i1", "x" * 129]}, "item_ids[1]"),
            ("POST", "/rank", {"user_id": "u1", "item_ids": ["i1", "i1"]}, "item_ids"),
            ("POST", "/rank", {"user_id": "u1\x00", "item_ids": ["i1"]}, "user_id"),
            ("POST", "/rank", {"user_id": "u1", "item_ids": ["i1"], "items": []}, "items"),
            ("POST", "/rank", "{not json", "body"),
            ("GET", "/recommend/u1?k=0", None, "k"),
            ("GET", "/recommend/u1?k=101", None, "k"),
            ("GET", "/recommend/u1?k=ten", None, "k"),
            ("GET", "/recommend/" + "u" * 129, None, "user_id"),
            ("GET", "/search?user_id=u1", None, "q"),
            ("GET", "/search?q=mug", None, "user_id"),
            ("GET", "/search?q=" + "a" * 201 + "&user_id=u1", None, "q"),
            ("GET", "/search?q=%21%21&user_id=u1", None, "q"),
        ],
    )
    def test_bad_requests_name_the_field(self, client, method, path, body, field):
        status, data = client.call(method, path, body)

        assert status == 422
        assert data["error"] == "invalid request"
        fields = [error["field"] for error in data.get("errors", [])]
        assert field in fields or data["message"].startswith(f"{field} "), data

    def test_metrics_and_health(self, home, client):
        client.ok("POST", "/rank", {"user_id": "metrics-user", "item_ids": popular_items(home)[:3]})
        health = client.ok("GET", "/healthz")
        status, text = client.call("GET", "/metrics")

        assert status == 200
        champion = champion_of(home)
        assert health["model_version"] == champion
        assert health["item_snapshot"]["items"] == len(latest_offline_rows(home.offline_dir, ITEM_VIEW))
        assert f'freshrank_model_info{{variant="control",version="{champion}"}} 1.0' in text
        assert 'freshrank_requests_total{endpoint="/rank",status="200"}' in text
        assert 'freshrank_request_duration_seconds_bucket{endpoint="/rank",le="0.01"}' in text
        assert 'freshrank_ranked_requests_total{endpoint="rank",variant="control"}' in text
        assert 'freshrank_feature_age_seconds{view="item_features"}' in text
        assert 'freshrank_unknown_entities_total{kind="user"}' in text

    def test_request_log_has_ids_only(self, home, client):
        items = popular_items(home)[:4]
        response = client.ok("POST", "/rank", {"user_id": "log-user", "item_ids": items})
        log = read_request_log(request_log_path(home))

        mine = log[log["request_id"] == response["request_id"]]
        assert len(mine) == 1
        record = mine.iloc[0]
        assert record["user_id"] == "log-user"
        assert record["variant"] == response["variant"]
        assert record["model_version"] == response["model_version"]
        assert record["item_ids"] == [entry["item_id"] for entry in response["items"]]
        with open(request_log_path(home)) as handle:
            keys = {tuple(sorted(json.loads(line))) for line in handle}
        assert keys == {tuple(sorted(LOG_FIELDS))}

    def test_hot_swap_under_concurrent_requests(self, home, service):
        registry = ModelRegistry(home.registry_dir)
        champion, other = champion_of(home), other_version(home)
        user, items = request_candidates(home)
        expected = {version: offline_scores(home, version, user, items) for version in (champion, other)}
        responses: list[dict] = []
        errors: list[str] = []
        stop = threading.Event()

        def hammer() -> None:
            client = service.client()
            while not stop.is_set():
                try:
                    status, data = client.call("POST", "/rank", {"user_id": user, "item_ids": items})
                except (OSError, http.client.HTTPException) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return
                if status != 200:
                    errors.append(f"{status}: {data}")
                else:
                    responses.append(data)

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for thread in threads:
            thread.start()
        health = service.client()
        try:
            for version in (other, champion, other, champion):
                registry.deploy(version, reason="hot swap test")
                wait_for(lambda: health.ok("GET", "/healthz")["model_version"] == version, f"the service to serve {version}")
                seen = len(responses)
                wait_for(lambda: len(responses) >= seen + 20, f"20 responses after swapping to {version}")
                wait_for(lambda: health.ok("GET", "/healthz")["candidates"]["built_for"] == version, f"candidates for {version}")
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)

        assert errors == []
        versions = {response["model_version"] for response in responses}
        assert versions == {champion, other}
        for response in responses:
            assert_ranked_like_offline(response, expected[response["model_version"]])
        assert champion_of(home) == champion

    def test_broken_deployment_keeps_serving(self, home, client):
        registry = ModelRegistry(home.registry_dir)
        champion = champion_of(home)
        rows = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
        booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(rows, label=[0, 1, 1, 0], feature_names=["a", "b"]), 2)
        day = registry.metadata(champion)["day"]
        broken = registry.register(booster, day=day, kind="full", parent=None, feature_columns=["a", "b"], training_partitions=[], params={})

        def failures() -> float:
            text = client.call("GET", "/metrics")[1]
            line = [row for row in text.splitlines() if row.startswith('freshrank_refreshes_total{component="model",outcome="failure"}')]
            return float(line[0].rsplit(" ", 1)[1]) if line else 0.0

        before = failures()
        registry.deploy(broken, reason="test: a model trained on other features")
        try:
            wait_for(lambda: failures() > before, "the failed model load to be counted")
            assert client.ok("GET", "/healthz")["model_version"] == champion
            items = popular_items(home)[:5]
            assert client.ok("POST", "/rank", {"user_id": "u-any", "item_ids": items})["model_version"] == champion
        finally:
            registry.deploy(champion, reason="test: back to the champion")

    def test_ab_split_is_stable_and_close_to_share(self, home):
        other = other_version(home)
        ab = ABConfig(treatment_version=other, treatment_share=0.3, salt="test-salt")
        settings = home.model_copy(update={"serving": home.serving.model_copy(update={"ab": ab, "request_log": ""})})
        user, items = request_candidates(home)
        users = [user] + [f"ab-user-{n}" for n in range(299)]
        with RunningService(settings) as running:
            client = running.client()
            first = {u: client.ok("POST", "/rank", {"user_id": u, "item_ids": items[:5]}) for u in users}
            second = {u: client.ok("POST", "/rank", {"user_id": u, "item_ids": items[:5]}) for u in users}
            status, text = client.call("GET", "/metrics")
            busy = client.ok("POST", "/rank", {"user_id": user, "item_ids": items})

        variants = {u: first[u]["variant"] for u in users}
        assert all(second[u]["variant"] == variants[u] for u in users)
        assert all(variants[u] == assign_variant(u, ab) for u in users)
        share = sum(variant == "treatment" for variant in variants.values()) / len(users)
        spread = 4 * (0.3 * 0.7 / len(users)) ** 0.5
        assert abs(share - 0.3) <= spread
        for u in users:
            expected_version = other if variants[u] == "treatment" else champion_of(home)
            assert first[u]["model_version"] == expected_version
        assert f'freshrank_model_info{{variant="treatment",version="{other}"}} 1.0' in text
        busy_version = busy["model_version"]
        assert_ranked_like_offline(busy, offline_scores(home, busy_version, user, items))

    def test_snapshot_follows_materialization(self, home, service, client):
        """Last test of the suite: it writes a newer item feature row into the online store."""
        user, items = request_candidates(home)
        item = items[0]
        rows = latest_offline_rows(home.offline_dir, ITEM_VIEW)
        row = rows[rows["item_id"] == item].copy()
        newer = row["event_timestamp"].iloc[0] + pd.Timedelta(days=1)
        row["event_timestamp"] = newer
        row["created_timestamp"] = newer
        row["i_views_1d"] = 999.0
        before = client.ok("GET", "/healthz")["item_snapshot"]["read_at"]

        open_store(home, apply=False).write_to_online_store(ITEM_VIEW, row)
        write_record(home, "online_features", newer.date(), {"written_by": "test_snapshot_follows_materialization"})
        health = wait_for(
            lambda: (data := client.ok("GET", "/healthz"))["item_snapshot"]["read_at"] > before and data,
            "the item snapshot to be re-read after the materialization record",
        )

        assert health["item_snapshot"]["newest_feature_ts"] == pytest.approx(newer.timestamp())
        changed = pd.concat([rows[rows["item_id"] != item], row], ignore_index=True)
        expected = offline_scores(home, champion_of(home), user, items, overrides={ITEM_VIEW: changed})
        assert_ranked_like_offline(client.ok("POST", "/rank", {"user_id": user, "item_ids": items}), expected)


class TestServiceSqlite(ServiceSuite):
    """The suite on the default SQLite online store."""

    @pytest.fixture(scope="class")
    def home(self, tmp_path_factory: pytest.TempPathFactory) -> Settings:
        base = base_home(tmp_path_factory)
        return copy_home(base, tmp_path_factory.mktemp("serving-sqlite") / "home")


def test_serve_command_answers_over_http(tmp_path_factory):
    home = copy_home(base_home(tmp_path_factory), tmp_path_factory.mktemp("serving-cli") / "home")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "freshrank", "serve", "--home", str(home.home), "--port", str(port)]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=environment)
    try:
        def healthy():
            if process.poll() is not None:
                raise AssertionError(f"freshrank serve exited with {process.returncode}: {process.stdout.read().decode()}")
            try:
                return Client(port).call("GET", "/healthz")[0] == 200
            except OSError:
                return False

        wait_for(healthy, "freshrank serve to answer /healthz", timeout=STARTUP_TIMEOUT_S)
        response = Client(port).ok("POST", "/rank", {"user_id": "cli-user", "item_ids": popular_items(home)[:3]})
        assert response["model_version"] == champion_of(home)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_command_rejects_empty_home(tmp_path):
    from typer.testing import CliRunner

    from freshrank.cli import app

    result = CliRunner().invoke(app, ["serve", "--home", str(tmp_path / "empty")])

    assert result.exit_code != 0
    assert "cannot be served yet" in str(result.exception)
