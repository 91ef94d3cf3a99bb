"""Mailbox-provider settings: defaults from PUBLIC_BASE_URL, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import ConfigError, load_settings


def settings_for(tmp_path: Path, **env: str) -> object:
    return load_settings({"SIGHTLINE_VAR_DIR": str(tmp_path), **env})


def test_defaults_point_at_google_and_microsoft_and_our_public_url(tmp_path: Path) -> None:
    s = load_settings(
        {"SIGHTLINE_VAR_DIR": str(tmp_path), "PUBLIC_BASE_URL": "https://app.example"}
    )
    p = s.providers
    assert p.gmail_api_endpoint == "https://gmail.googleapis.com/"
    assert p.google_token_uri == "https://oauth2.googleapis.com/token"
    assert p.microsoft_authority == "https://login.microsoftonline.com/common"
    assert p.gmail_push_audience == "https://app.example/webhooks/gmail"
    assert p.graph_notification_url == "https://app.example/webhooks/graph"
    assert (p.google_configured, p.microsoft_configured) == (False, False)
    assert (p.exchange_stream_minutes, p.push_poll_seconds) == (29, 1800)
    assert p.exchange_keepalive_seconds == 45  # what Microsoft's own EWS client expects


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"GOOGLE_CLIENT_ID": "x"}, "GOOGLE_CLIENT_SECRET"),
        ({"MICROSOFT_CLIENT_SECRET": "x"}, "MICROSOFT_CLIENT_SECRET"),
        ({"GMAIL_PUBSUB_TOPIC": "gmail-topic"}, "GMAIL_PUBSUB_TOPIC"),
        ({"GMAIL_PUSH_TOKEN": "short"}, "GMAIL_PUSH_TOKEN"),
        ({"MICROSOFT_AUTHORITY": "http://login.example/common"}, "MICROSOFT_AUTHORITY"),
        ({"MICROSOFT_AUTHORITY": "https://login.example/"}, "MICROSOFT_AUTHORITY"),
        ({"GMAIL_API_ENDPOINT": "gmail.googleapis.com"}, "GMAIL_API_ENDPOINT"),
        ({"GRAPH_NOTIFICATION_URL": "ftp://x/y"}, "GRAPH_NOTIFICATION_URL"),
        ({"SIGHTLINE_EXCHANGE_STREAM_MINUTES": "45"}, "SIGHTLINE_EXCHANGE_STREAM_MINUTES"),
        ({"SIGHTLINE_EXCHANGE_KEEPALIVE_SECONDS": "90"}, "SIGHTLINE_EXCHANGE_KEEPALIVE_SECONDS"),
        ({"SIGHTLINE_PUSH_POLL_SECONDS": "soon"}, "SIGHTLINE_PUSH_POLL_SECONDS"),
    ],
)
def test_a_bad_value_names_its_variable(tmp_path: Path, env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as raised:
        settings_for(tmp_path, **env)
    assert str(raised.value).startswith(variable)


def test_secrets_are_redacted_from_logs(tmp_path: Path) -> None:
    s = load_settings(
        {
            "SIGHTLINE_VAR_DIR": str(tmp_path),
            "GOOGLE_CLIENT_ID": "id",
            "GOOGLE_CLIENT_SECRET": "google-secret-value",
            "MICROSOFT_CLIENT_ID": "id",
            "MICROSOFT_CLIENT_SECRET": "microsoft-secret-value",
            "GMAIL_PUSH_TOKEN": "p" * 30,
        }
    )
    redacted = s.secrets_to_redact()
    assert {"google-secret-value", "microsoft-secret-value", "p" * 30} <= set(redacted)
    assert "google-secret-value" not in repr(s)


def test_skipped_folders_and_the_subject_window(tmp_path: Path) -> None:
    p = load_settings({"SIGHTLINE_VAR_DIR": str(tmp_path)}).providers
    assert p.skip_folders == ("Sent", "Drafts", "Trash", "Junk")
    assert p.subject_match_days == 30
    p = load_settings(
        {
            "SIGHTLINE_VAR_DIR": str(tmp_path),
            "SIGHTLINE_SKIP_FOLDERS": " Sent , Newsletters,Sent",
            "SIGHTLINE_SUBJECT_MATCH_DAYS": "7",
        }
    ).providers
    assert (p.skip_folders, p.subject_match_days) == (("Sent", "Newsletters"), 7)
    every = load_settings({"SIGHTLINE_VAR_DIR": str(tmp_path), "SIGHTLINE_SKIP_FOLDERS": ""})
    assert every.providers.skip_folders == ()


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"SIGHTLINE_SKIP_FOLDERS": "Sent,,Trash"}, "empty name between commas"),
        ({"SIGHTLINE_SKIP_FOLDERS": "Sent,Bad\x01Name"}, "is not a folder name"),
        ({"SIGHTLINE_SUBJECT_MATCH_DAYS": "0"}, "SIGHTLINE_SUBJECT_MATCH_DAYS"),
        ({"SIGHTLINE_SUBJECT_MATCH_DAYS": "a month"}, "SIGHTLINE_SUBJECT_MATCH_DAYS"),
    ],
)
def test_bad_folder_settings_name_the_variable(
    tmp_path: Path, env: dict[str, str], says: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"SIGHTLINE_VAR_DIR": str(tmp_path), **env})
    assert says in str(raised.value)
    assert str(raised.value).startswith(next(iter(env)))
