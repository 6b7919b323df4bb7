"""Feast's stack stores from URLs: the redis:// URL becomes Feast's connection string; a wrong URL
stops with the value named, before Feast is asked."""

from __future__ import annotations

import pytest

from features.store import FeastServices, build_repo_config, redis_connection_string


def test_a_redis_url_becomes_feasts_connection_string():
    assert redis_connection_string("redis://cache:6380/5") == "cache:6380,db=5"
    assert redis_connection_string("rediss://:s%40cret@cache/") == "cache:6379,db=0,password=s@cret,ssl=true"


@pytest.mark.parametrize("url", ["cache:6379", "http://cache:6379/0", "redis://cache:6379/zero"])
def test_a_wrong_online_store_url_is_refused_with_the_value(url):
    with pytest.raises(ValueError, match="Feast online store"):
        redis_connection_string(url)


def test_without_services_the_embedded_stores_of_the_yaml_stay(tmp_path):
    config = build_repo_config(tmp_path)
    assert config.online_store.type == "sqlite" and config.online_store.path == f"{tmp_path}/online_store.db"
    assert config.registry.path == f"{tmp_path}/registry.db"


def test_services_replace_the_online_store_and_the_registry(tmp_path):
    config = build_repo_config(tmp_path, FeastServices("redis://cache:6379/2", "postgresql+psycopg://u@db/feast"))
    assert (config.online_store.type, config.online_store.connection_string) == ("redis", "cache:6379,db=2")
    assert (config.registry.registry_type, config.registry.path) == ("sql", "postgresql+psycopg://u@db/feast")
    assert config.offline_store.type == "duckdb"  # parquet tables under FLYWHEEL_FEAST_DIR, as embedded
    with pytest.raises(ValueError, match="scheme 'mongodb' is not one of"):
        build_repo_config(tmp_path, FeastServices(registry="mongodb://db/feast"))
