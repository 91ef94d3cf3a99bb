"""app.json, heroku.yml and .python-version against the code they describe (issue 20).

Heroku's button creates an app from app.json (add-ons, config vars, dynos), its
Python buildpack reads .python-version, and the Procfile says what each dyno runs.
Each is checked against its source of truth: the variables the production settings
refuse to start without (by starting them, with what app.json would give a dyno),
the Procfile's processes and the queues they drain, and the Makefile's Python.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any

import yaml
from cryptography.fernet import Fernet

from config import queues
from config.settings import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]
# The config var each add-on sets when it is attached, and a value of its form.
ADDON_VARS = {
    "heroku-postgresql": ("DATABASE_URL", "postgres://u:dbpass123@db.example.com:5432/d1"),
    "heroku-redis": ("REDIS_URL", "rediss://:redispass1@redis.example.com:6380"),
}
# What a person types into the button's form where app.json asks and suggests nothing.
TYPED = {
    "PUBLIC_BASE_URL": "https://sightline-example.herokuapp.com",
    "SIGHTLINE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
}
# rq worker options that take a value (everything else after `rq worker` is a queue).
RQ_VALUE_OPTIONS = {"--config", "-c", "--connection-class", "--worker-class", "--url", "-u"}


def app_json() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "app.json").read_text())
    return data


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {
        name.strip(): command.strip()
        for name, _, command in (line.partition(":") for line in lines)
        if command.strip()
    }


def rq_worker_queues(command: str) -> list[str] | None:
    """The queues an `rq worker ...` command drains, in order; None for anything else."""
    words = command.split()
    if words[:2] != ["rq", "worker"]:
        return None
    drained, skip = [], False
    for word in words[2:]:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = word in RQ_VALUE_OPTIONS
        else:
            drained.append(word)
    return drained


def heroku_env() -> dict[str, str]:
    """The config vars a dyno of a button-made app has, as app.json makes them."""
    app = app_json()
    env = {"DYNO": "web.1"}  # Heroku sets it; the settings read production from it
    for addon in app["addons"]:
        service = addon["plan"].partition(":")[0]
        name, value = ADDON_VARS[service]
        env[name] = value
    for name, spec in app["env"].items():
        if spec.get("generator") == "secret":
            env[name] = secrets.token_hex(32)  # what Heroku generates: 64 hex digits
        elif "value" in spec:
            env[name] = spec["value"]
        elif spec.get("required", True):  # app.json's default is required
            assert name in TYPED, f"app.json asks for {name}: add what a person would type"
            env[name] = TYPED[name]
    return env


def test_a_dyno_starts_with_what_app_json_gives_it(tmp_path: Path) -> None:
    settings = load_settings({**heroku_env(), "SIGHTLINE_VAR_DIR": str(tmp_path)})
    assert settings.is_production
    assert settings.public_base_url == TYPED["PUBLIC_BASE_URL"]
    assert settings.redis_url.startswith("rediss://")
    assert not settings.redis_tls_verify  # Heroku Key-Value Store's self-signed certificate


def test_every_variable_production_requires_is_asked_for_or_given(tmp_path: Path) -> None:
    app = app_json()
    given = {name for name, _value in ADDON_VARS.values()}
    full = {**heroku_env(), "SIGHTLINE_VAR_DIR": str(tmp_path)}
    required = []
    for name in sorted(set(full) - {"DYNO", "SIGHTLINE_VAR_DIR"}):
        try:
            load_settings({k: v for k, v in full.items() if k != name})
        except ConfigError as exc:
            assert name in str(exc)
            required.append(name)
    assert {"SECRET_KEY", "SIGHTLINE_ENCRYPTION_KEY", "PUBLIC_BASE_URL"} <= set(required)
    for name in required:
        if name in given:
            continue
        spec = app["env"][name]
        assert spec.get("required", True) or "value" in spec or "generator" in spec, name


def test_every_variable_has_a_description_and_is_read_by_the_settings() -> None:
    settings_source = "".join(p.read_text() for p in (ROOT / "config" / "settings").glob("*.py"))
    for name, spec in app_json()["env"].items():
        assert len(spec.get("description", "")) > 20, name
        assert f'"{name}"' in settings_source, f"{name} is not a setting config/ reads"


def test_addons_buildpack_and_formation_match_the_procfile() -> None:
    app = app_json()
    services = {addon["plan"].partition(":")[0] for addon in app["addons"]}
    assert services == set(ADDON_VARS)
    assert [b["url"] for b in app["buildpacks"]] == ["heroku/python"]
    processes = set(procfile()) - {"release"}  # the release phase runs on each deploy
    assert set(app["formation"]) == processes
    for name, dynos in app["formation"].items():
        assert dynos["quantity"] >= 1, name
        assert re.fullmatch(r"standard-[12]x|performance-[ml]", dynos["size"]), name
    assert app["formation"]["cron"]["quantity"] == 1  # two would enqueue every tick twice


def test_documents_have_a_process_of_their_own_and_every_queue_is_drained() -> None:
    drained = {
        name: found
        for name, command in procfile().items()
        if (found := rq_worker_queues(command)) is not None
    }
    assert drained["documents"] == [queues.DOCUMENTS]
    assert all(queues.DOCUMENTS not in q for name, q in drained.items() if name != "documents")
    assert {q for found in drained.values() for q in found} == set(queues.ALL)


def test_the_documents_app_runs_the_procfile_command_on_the_same_python() -> None:
    heroku_yml = yaml.safe_load((ROOT / "heroku.yml").read_text())
    run = heroku_yml["run"]["documents"]
    assert run["command"] == [procfile()["documents"]]
    dockerfile = (ROOT / heroku_yml["build"]["docker"][run["image"]]).read_text()
    version = (ROOT / ".python-version").read_text().strip()
    assert f"FROM python:{version}-" in dockerfile
    assert "--require-hashes -r requirements.txt" in dockerfile


def test_python_version_is_the_one_the_makefile_uses() -> None:
    version = (ROOT / ".python-version").read_text().strip()
    assert re.fullmatch(r"3\.\d+", version), "the buildpack takes a major version: 3.11"
    makefile = (ROOT / "Makefile").read_text()
    found = re.search(r"^PYTHON \?= python(\S+)$", makefile, re.MULTILINE)
    assert found and found.group(1) == version
