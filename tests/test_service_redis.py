"""The ranking service suite of tests/test_service.py against a real redis-server online store.

The home is a copy of the replayed SQLite home whose settings name Redis. Every landed day is
materialized into Redis with the same ``materialize_day`` that the daily loop calls.
"""

from __future__ import annotations

import pytest

from freshrank.config import Settings
from tests.test_service import ServiceSuite, base_home, copy_home

redis = pytest.importorskip("redis", reason="the redis client is needed for the Redis online store (pip install freshrank[redis])")


class TestServiceRedis(ServiceSuite):
    """The suite on ``online_store.type: redis``."""

    @pytest.fixture(scope="class")
    def home(self, tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Settings:
        base = base_home(tmp_path_factory)
        settings = copy_home(base, tmp_path_factory.mktemp("serving-redis") / "home", redis=redis_server)
        host, port = redis_server.split(":")
        assert redis.Redis(host=host, port=int(port)).dbsize() > 0
        assert not (settings.feast_dir / "online.db").exists()
        return settings
