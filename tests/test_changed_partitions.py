"""Only changed partitions recompute: re-delivery, a corrected day, a late day; asserted on Dagster's event log."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections import Counter
from datetime import date, timedelta

import pandas as pd
import pytest
from dagster import AssetKey, DagsterEventType, EventRecordsFilter

from freshrank.config import OnlineStoreConfig, load_settings, save_settings
from freshrank.feature_store import expected_online_rows, online_features_for
from freshrank.features import FEATURE_VIEWS
from freshrank.synthetic import ShopSpec, generate_day, generate_shop
from freshrank.warehouse import connect
from orchestration.changes import plan_runs
from orchestration.replay import dagster_instance, run_changes

START = date(2024, 1, 1)
SPEC = ShopSpec(days=12, users=200, items=80, seed=21, start=START)
FEATURE_AND_ONLINE = (*FEATURE_VIEWS, "online_features")


def day(n: int) -> date:
    """Return day ``n`` of the shop, counting from 1."""
    return START + timedelta(days=n - 1)


def materializations_since(instance, cursor: int) -> Counter:
    records = instance.get_event_records(
        EventRecordsFilter(event_type=DagsterEventType.ASSET_MATERIALIZATION, after_cursor=cursor), limit=100_000
    )
    return Counter(
        (record.asset_key.to_user_string(), record.partition_key) for record in records
    )


def last_storage_id(instance) -> int:
    return instance.event_log_storage.get_maximum_record_id() or 0


def land(settings, n: int) -> None:
    """Write day ``n`` of the synthetic shop into the landing folder."""
    frame = generate_day(SPEC, n - 1)
    folder = settings.landing_dir / day(n).isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / "events.parquet", index=False)


def correct(settings, n: int) -> str:
    """Replace day ``n``'s file with a corrected one: 20 events moved to one user; return that user."""
    path = settings.landing_dir / day(n).isoformat() / "events.parquet"
    frame = pd.read_parquet(path)
    user = str(frame["user_id"].dropna().iloc[0])
    frame.loc[frame.index[:20], "user_id"] = user
    frame.to_parquet(path, index=False)
    return user


@pytest.fixture(scope="module")
def ten_days(tmp_path_factory):
    settings = load_settings(tmp_path_factory.mktemp("changes_home"))
    for n in range(1, 11):
        land(settings, n)
    runs = run_changes(settings)
    assert all(run.success for run in runs), [run.day for run in runs if not run.success]
    return settings


def test_replay_runs_every_day_once(ten_days):
    instance = dagster_instance(ten_days)
    days = {date.fromisoformat(key) for key in instance.get_materialized_partitions(AssetKey("deployment"))}
    assert days == {day(n) for n in range(1, 11)}


def test_identical_redelivery_recomputes_nothing(ten_days, tmp_path):
    settings = ten_days
    instance = dagster_instance(settings)
    cursor = last_storage_id(instance)
    first = settings.landing_dir / day(1).isoformat() / "events.parquet"
    os.utime(first, None)  # touched
    second = settings.landing_dir / day(2).isoformat() / "events.parquet"
    second.rename(second.with_name("renamed.parquet"))  # renamed
    third = settings.landing_dir / day(3).isoformat() / "events.parquet"
    shutil.copy(third, tmp_path / "copy.parquet")
    shutil.copy(tmp_path / "copy.parquet", third)  # copied over itself
    shutil.copy(third, third.with_name("copy-of-events.parquet"))  # a second byte-identical copy
    for n in range(4, 11):  # delivered again
        path = settings.landing_dir / day(n).isoformat() / "events.parquet"
        path.write_bytes(path.read_bytes())
    assert plan_runs(settings, instance) == []
    runs = run_changes(settings)
    assert runs == []
    assert materializations_since(instance, cursor) == Counter()


def test_corrected_day_recomputes_exact_set(ten_days):
    settings = ten_days
    instance = dagster_instance(settings)
    cursor = last_storage_id(instance)
    user = correct(settings, 4)
    runs = run_changes(settings)
    assert all(run.success for run in runs)
    expected = Counter({("increment", "2024-01-04"): 1, ("events", "2024-01-04"): 1, ("daily_report", "2024-01-04"): 1})
    for n in range(4, 11):
        for asset in (*FEATURE_AND_ONLINE, "training_rows"):
            expected[(asset, day(n).isoformat())] = 1
    assert materializations_since(instance, cursor) == expected
    # The online value of the affected user equals the recomputed offline value.
    newest = expected_online_rows(settings, "user_features", day(10), day(10))
    offline = newest.set_index("user_id").loc[user]
    online = online_features_for(settings, "user_features", {"user_id": user})
    for name in ("u_views_7d", "u_purchases_7d", "u_last_event_epoch_us"):
        assert online[name] == pytest.approx(offline[name]), name


def test_corrected_day_features_reflect_correction(ten_days):
    settings = ten_days
    features = pd.read_parquet(settings.offline_dir / "user_features" / f"{day(10).isoformat()}.parquet")
    with connect(settings.warehouse_path, read_only=True) as con:
        counts = dict(
            con.execute(
                "SELECT user_id, count(*) FROM events WHERE event_day BETWEEN ? AND ? AND event_type = 'view' "
                "AND user_id IS NOT NULL GROUP BY user_id",
                [day(4), day(10)],
            ).fetchall()
        )
    by_user = features.set_index("user_id")["u_views_7d"]
    for user, views in list(counts.items())[:25]:
        assert by_user[user] == views, user


def test_late_day_and_its_dependants(tmp_path):
    settings = load_settings(tmp_path / "late_home")
    for n in (1, 2, 3, 5):
        land(settings, n)
    assert all(run.success for run in run_changes(settings))
    instance = dagster_instance(settings)
    cursor = last_storage_id(instance)
    land(settings, 4)
    runs = run_changes(settings)
    assert all(run.success for run in runs)
    late = day(4).isoformat()
    later = day(5).isoformat()
    expected = Counter({(asset, late): 1 for asset in ("increment", "events", *FEATURE_AND_ONLINE, "training_rows", "daily_report")})
    expected.update({(asset, later): 1 for asset in (*FEATURE_AND_ONLINE, "training_rows")})
    assert materializations_since(instance, cursor) == expected
    features = pd.read_parquet(settings.offline_dir / "user_features" / f"{later}.parquet").set_index("user_id")
    with connect(settings.warehouse_path, read_only=True) as con:
        user, views = con.execute(
            "SELECT user_id, count(*) FROM events WHERE event_day = ? AND event_type = 'view' AND user_id IS NOT NULL "
            "GROUP BY user_id ORDER BY 2 DESC, 1 LIMIT 1",
            [day(4)],
        ).fetchone()
        total = con.execute(
            "SELECT count(*) FROM events WHERE event_day BETWEEN ? AND ? AND event_type = 'view' AND user_id = ?",
            [day(1), day(5), user],
        ).fetchone()[0]
    assert views > 0
    assert features.loc[user, "u_views_7d"] == total


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture()
def redis_url(tmp_path):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    import redis

    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail(f"redis-server did not answer PING on port {port}")
            time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


def test_correction_reaches_redis(tmp_path, redis_url):
    settings = load_settings(tmp_path / "redis_home")
    save_settings(settings.model_copy(update={"online_store": OnlineStoreConfig(type="redis", connection_string=redis_url)}))
    settings = load_settings(settings.home)
    for n in (1, 2, 3, 4):
        land(settings, n)
    assert all(run.success for run in run_changes(settings))
    user = correct(settings, 2)
    assert all(run.success for run in run_changes(settings))
    offline = expected_online_rows(settings, "user_features", day(4), day(4)).set_index("user_id").loc[user]
    online = online_features_for(settings, "user_features", {"user_id": user})
    for name in ("u_views_7d", "u_carts_7d", "u_last_event_epoch_us"):
        assert online[name] == pytest.approx(offline[name]), name


def three_days_and_a_fourth_landed(tmp_path):
    """Return a home with days 1 to 3 run, day 4 landed, and its Dagster instance."""
    settings = load_settings(tmp_path / "home")
    for n in (1, 2, 3):
        land(settings, n)
    assert all(run.success for run in run_changes(settings))
    land(settings, 4)
    return settings, dagster_instance(settings)


def test_interrupted_day_completed_by_run(tmp_path):
    from orchestration.replay import run_day
    from orchestration.status import partition_states

    settings, instance = three_days_and_a_fourth_landed(tmp_path)
    # Day 4's ingest run finishes, and the process dies before the online and model branches.
    assert run_day(settings, day(4), instance, assets=[AssetKey("increment"), AssetKey("events")]).success

    assert plan_runs(settings, instance) == []
    planned = plan_runs(settings, instance, complete_interrupted=True)
    assert [run.partition for run in planned] == ["2024-01-04"]
    assert "increment" not in planned[0].assets
    assert "online_features" in planned[0].assets
    assert "challenger_model" in planned[0].assets
    assert planned[0].reason.startswith("interrupted: ")
    states = {state.day: state.state for state in partition_states(settings, instance)}
    assert states["2024-01-04"] == "interrupted"
    assert states["2024-01-03"] == "up to date"

    cursor = last_storage_id(instance)
    runs = run_changes(settings)

    assert [run.day for run in runs] == ["2024-01-04"]
    assert runs[0].success
    done = materializations_since(instance, cursor)
    assert done[("online_features", "2024-01-04")] == 1
    assert done[("challenger_model", "2024-01-04")] == 1
    assert done[("deployment", "2024-01-04")] == 1
    assert done[("increment", "2024-01-04")] == 0
    assert all(partition != "2024-01-03" for _, partition in done)
    assert plan_runs(settings, instance, complete_interrupted=True) == []
    assert {state.day: state.state for state in partition_states(settings, instance)}["2024-01-04"] == "up to date"


def test_interrupted_deploy_run_completed(tmp_path):
    from orchestration.replay import run_day

    settings, instance = three_days_and_a_fourth_landed(tmp_path)
    # Day 4's ingest run and both branches finish, and the process dies before the deploy run.
    branches = ["increment", "events", *FEATURE_AND_ONLINE, "training_rows", "prequential_evaluation", "challenger_model"]
    assert run_day(settings, day(4), instance, assets=[AssetKey(name) for name in branches]).success

    planned = plan_runs(settings, instance, complete_interrupted=True)

    assert [run.partition for run in planned] == ["2024-01-04"]
    assert planned[0].assets == ("shadow_full_retrain", "prediction_drift", "deployment", "daily_report")
    cursor = last_storage_id(instance)
    assert all(run.success for run in run_changes(settings))
    done = materializations_since(instance, cursor)
    assert done[("deployment", "2024-01-04")] == 1
    assert done[("challenger_model", "2024-01-04")] == 0
    assert plan_runs(settings, instance, complete_interrupted=True) == []
