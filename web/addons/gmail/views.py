"""The Gmail add-on's cards: homepage, the people of an open message, compose, and refusals.

Each function turns what `web.addons.service` answered into one card (card
JSON, `web.addons.gmail.cards`); none reads the database or the request. Buttons
post back to `<base>/actions/<name>` (`base` is PUBLIC_BASE_URL/addons/gmail)
with string parameters: the enrolment, the address, and the thread's people,
so the card can be drawn again after the action without reading Gmail again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from web.addons.gmail import cards
from web.addons.gmail.cards import Card, Widget, plain
from web.addons.views import (
    Activity,
    ContentChoices,
    EnrollmentView,
    FeedItem,
    PersonPanel,
    ProspectPanel,
)

ACTION_LABELS = {"pause": "Pause", "resume": "Resume", "stop": "Stop"}
STATE_WORDS = {
    "active": "Active",
    "paused": "Paused",
    "replied": "Replied",
    "bounced": "Bounced",
    "opted_out": "Opted out",
    "finished": "Finished",
}
SHOWN_ACTIVITIES = 3
PEOPLE_SEPARATOR = ","
NO_DOCUMENT = "none"  # the drop-down's value for "open tracking only"


def when(moment: datetime | None, zone: ZoneInfo) -> str:
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    local = moment.astimezone(zone)
    return f"{local:%b} {local.day}, {local:%H:%M}" + (" UTC" if zone.key == "UTC" else "")


def _action(base: str, name: str, **parameters: str) -> dict[str, object]:
    return {"action": cards.action(f"{base}/actions/{name}", **parameters)}


# -- refusals and explanations ----------------------------------------------------------


def unknown_user_card(email: str) -> Card:
    who = plain(email, 320)
    return cards.card(
        "Sightline",
        "No Sightline account",
        [
            cards.section(
                [
                    cards.paragraph(
                        f"Sightline has no account for <b>{who}</b>, so there is nothing to "
                        "show here yet."
                    ),
                    cards.paragraph(
                        f"To get access, ask your Sightline admin to invite <b>{who}</b> to "
                        "your team, then open this add-on again."
                    ),
                ]
            )
        ],
        "no_account",
    )


def needs_email_card() -> Card:
    return cards.card(
        "Sightline",
        "Who are you?",
        [
            cards.section(
                [
                    cards.paragraph(
                        "Sightline finds your account by your verified Google email address, "
                        "and Google did not share it with this add-on. Allow the add-on to "
                        "see your email address when Gmail asks, or ask your Google Workspace "
                        "admin to grant it for your domain."
                    )
                ]
            )
        ],
        "needs_email",
    )


def notice_card(reason: str, subtitle: str = "This message") -> Card:
    """A sentence instead of the card asked for: why it cannot be shown."""
    return cards.card(
        "Sightline", subtitle, [cards.section([cards.paragraph(plain(reason))])], "notice"
    )


# -- homepage -------------------------------------------------------------------------


def homepage_card(items: list[FeedItem], zone: ZoneInfo) -> Card:
    widgets: list[Widget] = [
        cards.decorated(item.text, top=item.label, bottom=when(item.occurred_at, zone))
        for item in items
    ]
    if not widgets:
        widgets = [
            cards.paragraph(
                "Nothing yet. Opens, clicks, replies and documents read appear here as they happen."
            )
        ]
    return cards.card("Sightline", "Latest activity", [cards.section(widgets)], "homepage")


# -- the people of an open message --------------------------------------------------------


def _enrollment_widgets(
    enrollment: EnrollmentView, base: str, people: str, zone: ZoneInfo
) -> list[Widget]:
    state = STATE_WORDS.get(enrollment.state, enrollment.state.replace("_", " ").capitalize())
    if enrollment.next_step is not None and enrollment.state in ("active", "paused"):
        state += f" · step {enrollment.next_step} of {enrollment.steps_total} next"
    else:
        state += f" · {enrollment.steps_sent} of {enrollment.steps_total} sent"
    bottom = enrollment.reason or f"since {when(enrollment.state_changed_at, zone)}"
    widgets: list[Widget] = [
        cards.decorated(state, top=enrollment.sequence_name, bottom=bottom),
    ]
    if enrollment.actions:
        widgets.append(
            cards.buttons(
                *(
                    cards.button(
                        ACTION_LABELS[name],
                        _action(base, name, enrollment_id=str(enrollment.id), people=people),
                    )
                    for name in enrollment.actions
                    if name in ACTION_LABELS
                )
            )
        )
    return widgets


def _activity_widgets(label: str, activities: list[Activity], zone: ZoneInfo) -> list[Widget]:
    return [
        cards.decorated(a.text, top=label, bottom=when(a.occurred_at, zone))
        for a in activities[:SHOWN_ACTIVITIES]
    ]


def choose_sequence_card(person: PersonPanel, base: str, people: str) -> Card:
    """The card "Add to sequence…" opens: the team's sequences this person can join."""
    who = person.name or person.address
    widgets: list[Widget] = [
        cards.dropdown("sequence_id", "Sequence", [(str(s.id), s.name) for s in person.add_to]),
        cards.buttons(
            cards.button(
                "Add",
                _action(base, "enrol", address=person.address, people=people),
            )
        ),
    ]
    return cards.card(
        "Add to sequence",
        who if person.name is None else f"{person.name} <{person.address}>",
        [cards.section(widgets)],
        "choose_sequence",
    )


def _person_section(
    person: PersonPanel, base: str, people: str, zone: ZoneInfo
) -> dict[str, object]:
    widgets: list[Widget] = []
    if person.company:
        widgets.append(cards.decorated(person.company, top="Company"))
    if person.prospect_id is None:
        widgets.append(cards.paragraph("Not in Sightline yet."))
    for enrollment in person.enrollments:
        widgets += _enrollment_widgets(enrollment, base, people, zone)
    if person.prospect_id is not None and not person.enrollments:
        widgets.append(cards.paragraph("In no sequence."))
    widgets += _activity_widgets("Opened", person.last_opens, zone)
    widgets += _activity_widgets("Clicked", person.last_clicks, zone)
    widgets += _activity_widgets("Read", person.pages_read, zone)
    if person.not_enrollable:
        widgets.append(cards.paragraph(plain(person.not_enrollable)))
    elif person.add_to:
        widgets.append(
            cards.buttons(
                cards.button(
                    "Add to sequence…", {"card": choose_sequence_card(person, base, people)}
                )
            )
        )
    title = f"{person.name} <{person.address}>" if person.name else person.address
    return cards.section(widgets, header=title)


def panel_card(panel: ProspectPanel, people: list[str], base: str, zone: ZoneInfo) -> Card:
    joined = PEOPLE_SEPARATOR.join(people)
    sections = [_person_section(p, base, joined, zone) for p in panel.people]
    if not sections:
        sections = [
            cards.section(
                [cards.paragraph("Only your own team is on this message: nobody to show.")]
            )
        ]
    count = len(panel.people)
    subtitle = f"{count} {'person' if count == 1 else 'people'} on this message"
    return cards.card("Sightline", subtitle, sections, "message")


# -- compose ----------------------------------------------------------------------------


def compose_card(choices: ContentChoices, base: str, draft_ref: str) -> Card:
    """Pick a library document (or none) and whether to track opens; Insert."""
    widgets: list[Widget] = []
    if choices.unavailable:
        widgets.append(cards.paragraph(plain(choices.unavailable, 1000)))
    elif choices.documents:
        items = [
            (
                str(d.id),
                f"{d.name} · {d.kind.upper()}"
                + (f" · {d.page_count} pages" if d.page_count else ""),
            )
            for d in choices.documents
        ]
        items.append((NO_DOCUMENT, "No document: open tracking only"))
        widgets.append(cards.dropdown("document_id", "Document from your library", items))
        widgets.append(
            cards.paragraph(
                "One person in To: the link is theirs. Several: one link for this email, "
                "and views count for the email."
            )
        )
    else:
        widgets.append(cards.paragraph("No documents are ready in your team's library yet."))
    widgets.append(cards.switch("track_opens", "Track opens", selected=not choices.documents))
    widgets.append(
        cards.buttons(cards.button("Insert", _action(base, "insert", draft_ref=draft_ref)))
    )
    return cards.card("Sightline", "Add trackable content", [cards.section(widgets)], "compose")
