"""The Outlook add-in's manifest (add-in only XML, `MailApp`), made for this install.

An admin downloads ``/addons/outlook/manifest.xml`` and uploads it (Microsoft 365
admin center → Integrated apps, or sideloads it in Outlook on the web). Every URL
in it is under `PUBLIC_BASE_URL`, which Office requires to be https.

The add-in's `<Id>` is what Office knows the add-in by: a re-uploaded manifest with
the same Id replaces the add-in rather than adding a second one. It is a UUID 5 of
`PUBLIC_BASE_URL` (`addin_id`): the same for every download from one install, and
unchanged by a `SECRET_KEY` rotation; two installs (say staging and production)
have different Ids and can be deployed side by side. `VERSION` must go up whenever
the manifest's content changes, or Outlook keeps the copy it cached.

The layout follows Microsoft's schema order: the v1.1 basics (read and compose
forms, `ReadWriteItem`, the rule that activates it on messages being read or
written), then `VersionOverridesV1_0` (buttons on the message read and compose
command surfaces that open our task panes; Mailbox 1.3) with a nested
`VersionOverridesV1_1` (the same, plus shared folders and a pinnable read pane).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import render_template

from config import get_settings

VERSION = "1.0.0.0"
NAME = "Sightline"
DESCRIPTION = (
    "See who opened, clicked and read what you sent, manage their sequences, and insert "
    "tracked links to your team's documents, from Outlook."
)
PREFIX = "/addons/outlook"


def addin_id(public_base_url: str) -> str:
    """The add-in's Office Id: stable for one install, different between installs."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, public_base_url.rstrip("/") + PREFIX))


@dataclass(frozen=True)
class Surface:
    """A command surface the add-in puts a button on, and the pane the button opens."""

    extension_point: str
    group_id: str
    button_id: str
    label_id: str
    tip_id: str
    url_id: str
    pinnable: bool


SURFACES = (
    Surface(
        "MessageReadCommandSurface",
        "sightlineReadGroup",
        "sightlineReadButton",
        "readLabel",
        "readTip",
        "readPaneUrl",
        pinnable=True,
    ),
    Surface(
        "MessageComposeCommandSurface",
        "sightlineComposeGroup",
        "sightlineComposeButton",
        "composeLabel",
        "composeTip",
        "composePaneUrl",
        pinnable=False,
    ),
)


@dataclass(frozen=True)
class Manifest:
    """The values the template fills in."""

    base: str

    @property
    def addin_id(self) -> str:
        return addin_id(self.base)

    @property
    def version(self) -> str:
        return VERSION

    @property
    def name(self) -> str:
        return NAME

    @property
    def description(self) -> str:
        return DESCRIPTION

    @property
    def origin(self) -> str:
        parts = urlsplit(self.base)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def support_url(self) -> str:
        return self.base + "/"

    @property
    def read_url(self) -> str:
        return f"{self.base}{PREFIX}/read"

    @property
    def compose_url(self) -> str:
        return f"{self.base}{PREFIX}/compose"

    @property
    def function_file_url(self) -> str:
        return f"{self.base}{PREFIX}/functions"

    @property
    def surfaces(self) -> tuple[Surface, ...]:
        return SURFACES

    def icon(self, size: int) -> str:
        return f"{self.base}/static/addons/icon-{size}.png"


def render_manifest() -> str:
    """The manifest for this install's `PUBLIC_BASE_URL`."""
    base = get_settings().public_base_url.rstrip("/")
    return render_template("addons/outlook/manifest.xml", m=Manifest(base))
