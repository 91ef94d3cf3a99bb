"""Settings: defaults for a local run, strictness for production, clear errors."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography.fernet import Fernet

from config import get_settings
from config.settings import ConfigError, load_settings
from worker.salesforce.outbox_rows import _backoff

KEY = Fernet.generate_key().decode()
SECRET = "s" * 40


def production(**extra: str) -> dict[str, str]:
    return {
        "SIGHTLINE_ENV": "production",
        "DATABASE_URL": "postgres://u:dbpass123@db.example.com:5432/app",
        "REDIS_URL": "rediss://:redispass1@redis.example.com:6380",
        "SECRET_KEY": SECRET,
        "SIGHTLINE_ENCRYPTION_KEY": KEY,
        "PUBLIC_BASE_URL": "https://track.example.com/",
        **extra,
    }


def test_local_defaults_need_no_configuration(tmp_path: Path) -> None:
    settings = load_settings({"SIGHTLINE_VAR_DIR": str(tmp_path)})
    assert settings.env == "development"
    assert settings.database_url == f"sqlite:///{tmp_path / 'sightline.db'}"
    assert settings.redis_embedded
    assert settings.redis_url == f"unix://{tmp_path / 'redis' / 'redis.sock'}"
    assert settings.public_base_url == "http://localhost:5000"
    # Keys are generated once, kept private, and reused by the next process.
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    again = load_settings({"SIGHTLINE_VAR_DIR": str(tmp_path)})
    assert again.secret_key == settings.secret_key
    assert again.encryption_keys == settings.encryption_keys


def test_production_converts_heroku_urls_and_strips_slash() -> None:
    settings = load_settings(production())
    assert settings.database_url == "postgresql+psycopg://u:dbpass123@db.example.com:5432/app"
    assert settings.public_base_url == "https://track.example.com"
    assert not settings.redis_embedded


def test_heroku_dyno_implies_production_and_its_shard() -> None:
    env = production(DYNO="listener.3", SIGHTLINE_LISTENER_SHARDS="4")
    del env["SIGHTLINE_ENV"]
    settings = load_settings(env)
    assert settings.is_production
    assert settings.listener_shard == 2


@pytest.mark.parametrize(
    "missing",
    ["DATABASE_URL", "REDIS_URL", "SECRET_KEY", "SIGHTLINE_ENCRYPTION_KEY", "PUBLIC_BASE_URL"],
)
def test_production_refuses_to_start_without(missing: str) -> None:
    env = production()
    del env[missing]
    with pytest.raises(ConfigError, match=rf"^{missing}: required"):
        load_settings(env)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DATABASE_URL", "mysql://x/y", "unsupported scheme"),
        ("REDIS_URL", "http://x", "unsupported scheme"),
        ("PORT", "eighty", "whole number"),
        ("PORT", "70000", "between 1 and 65535"),
        ("SIGHTLINE_ENCRYPTION_KEY", "not-a-key", "not a Fernet key"),
        ("SECRET_KEY", "short", "at least 32"),
        ("PUBLIC_BASE_URL", "track.example.com", "expected http"),
        ("LOG_LEVEL", "LOUD", "expected DEBUG"),
        ("REDIS_TLS_VERIFY", "maybe", "true or false"),
        ("SIGHTLINE_ENV", "staging", "expected one of"),
        ("SIGHTLINE_TRACKING_CNAME_TARGET", "10.0.0.1", "expected host names"),
        ("SIGHTLINE_TRACKING_CNAME_TARGET", ".com", "at least two labels"),
        ("SIGHTLINE_TRACKING_CNAME_TARGET", "app.example.com, https://x.example.com", "got 'https"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(production(**{name: value}))
    assert str(raised.value).startswith(f"{name}: ")
    assert message in str(raised.value)


def test_tracking_hosts_point_at_the_public_host_unless_told_otherwise() -> None:
    assert load_settings(production()).tracking_cname_targets == (
        urlsplit(production()["PUBLIC_BASE_URL"]).hostname,
    )
    told = production(SIGHTLINE_TRACKING_CNAME_TARGET=" .HerokuDNS.com, edge.example.net ")
    assert load_settings(told).tracking_cname_targets == (".herokudns.com", "edge.example.net")


def test_key_rotation_accepts_a_list_newest_first() -> None:
    older = Fernet.generate_key().decode()
    settings = load_settings(production(SIGHTLINE_ENCRYPTION_KEY=f"{KEY}, {older}"))
    assert settings.encryption_keys == (KEY, older)


def test_salesforce_token_needs_instance_url() -> None:
    with pytest.raises(ConfigError, match=r"^SALESFORCE_INSTANCE_URL: required"):
        load_settings(production(SALESFORCE_ACCESS_TOKEN="00Dxx!token"))


def test_secrets_to_redact_cover_every_configured_secret() -> None:
    settings = load_settings(
        production(SALESFORCE_USERNAME="u@x.com", SALESFORCE_PASSWORD="sfpassword1")
    )
    redacted = settings.secrets_to_redact()
    for secret in (SECRET, KEY, "sfpassword1", "dbpass123", "redispass1"):
        assert secret in redacted
    assert SECRET not in repr(settings)


def test_document_network_isolation_is_auto_unless_set_and_refuses_other_words(
    tmp_path: Path,
) -> None:
    local = {"SIGHTLINE_VAR_DIR": str(tmp_path)}
    assert load_settings(local).documents.network_isolation == "auto"
    required = {**local, "SIGHTLINE_DOCUMENT_NETWORK_ISOLATION": "Required"}
    assert load_settings(required).documents.network_isolation == "required"
    with pytest.raises(ConfigError, match="SIGHTLINE_DOCUMENT_NETWORK_ISOLATION"):
        load_settings({**local, "SIGHTLINE_DOCUMENT_NETWORK_ISOLATION": "yes"})


def test_document_file_isolation_takes_the_same_words_on_its_own(tmp_path: Path) -> None:
    local = {"SIGHTLINE_VAR_DIR": str(tmp_path)}
    assert load_settings(local).documents.file_isolation == "auto"
    off = {**local, "SIGHTLINE_DOCUMENT_FILE_ISOLATION": "OFF"}
    assert load_settings(off).documents.file_isolation == "off"
    assert load_settings(off).documents.network_isolation == "auto"
    with pytest.raises(ConfigError, match="SIGHTLINE_DOCUMENT_FILE_ISOLATION: expected auto"):
        load_settings({**local, "SIGHTLINE_DOCUMENT_FILE_ISOLATION": "private"})


def test_salesforce_back_off_doubles_up_to_its_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"SIGHTLINE_VAR_DIR": str(tmp_path), "SIGHTLINE_SALESFORCE_RETRY_BASE_SECONDS": "10"}
    assert load_settings(env).salesforce.retry_max_seconds == 3600
    with pytest.raises(ConfigError, match="SIGHTLINE_SALESFORCE_RETRY_MAX_SECONDS"):
        load_settings({**env, "SIGHTLINE_SALESFORCE_RETRY_MAX_SECONDS": "0"})
    for name, value in {**env, "SIGHTLINE_SALESFORCE_RETRY_MAX_SECONDS": "100"}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        waits = [_backoff(attempts).total_seconds() for attempts in (1, 2, 3, 5, 10_000)]
    finally:
        get_settings.cache_clear()
    for wait, expected in zip(waits, (10, 20, 40, 100, 100), strict=True):
        assert expected * 0.8 <= wait <= expected * 1.2, waits
