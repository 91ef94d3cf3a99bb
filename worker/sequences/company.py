"""Stop at the company: a reply stops every live enrolment of the prospect's company.

What this module owns: the sequence option ``stop_at_company`` (off by default)
and who counts as a colleague. When a real reply (``reply`` signal: not an
auto-reply, a bounce or a teammate's answer) is recorded on an enrolment whose
sequence has the option on, every other live (active or paused) enrolment of
the team, in any sequence, whose prospect is at the same company ends as
``finished``, with the reason "reply from a colleague at <company>" (or, for
the prospect's own enrolments in other sequences, "replied in another
sequence"). The enrolment that was answered follows the ordinary reply rule
(``worker.sequences.rules``).

Same company::

    both prospects have a Salesforce Account id   → the same Account
    otherwise                                     → the same email domain,
                                                    never a free-mail one

so two gmail.com addresses are never colleagues, and two Contacts of different
Accounts are not colleagues even on one domain (a group's subsidiaries).

Never commits (the caller, ``worker.sync.inbound``, owns the transaction that
records the reply); never stops an enrolment behind ``transition``'s back.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from core.mail_domains import domain_of, is_free_mail
from core.models import Enrollment, EnrollmentState, Prospect, SentMessage, Sequence
from worker.sequences.enrolling import transition

log = logging.getLogger(__name__)

_LIVE = frozenset({EnrollmentState.ACTIVE, EnrollmentState.PAUSED})


def same_company(
    account: str | None, domain: str, other_account: str | None, other_email: str
) -> bool:
    """The rule above, for one pair: (Account, domain) of one prospect, and the other's."""
    if account and other_account:
        return account == other_account
    return bool(domain) and not is_free_mail(domain) and domain_of(other_email) == domain


def stop_colleagues(session: Session, sent: SentMessage, event_id: int, now: datetime) -> int:
    """After a reply to `sent`: stop the company's other live enrolments; how many stopped."""
    if sent.enrollment_id is None or sent.prospect_id is None:
        return 0
    wanted = session.scalar(
        select(Sequence.stop_at_company)
        .join(Enrollment, Enrollment.sequence_id == Sequence.id)
        .where(Enrollment.id == sent.enrollment_id)
    )
    if not wanted:
        return 0
    prospect = session.get_one(Prospect, sent.prospect_id)
    account = prospect.salesforce_account_id
    domain = domain_of(prospect.email)
    by_domain = bool(domain) and not is_free_mail(domain)
    conditions = [Prospect.id == prospect.id]
    if account:
        conditions.append(Prospect.salesforce_account_id == account)
    if by_domain:
        conditions.append(func.lower(Prospect.email).endswith(f"@{domain}", autoescape=True))
    rows = session.execute(
        select(Enrollment.id, Prospect.id, Prospect.salesforce_account_id, Prospect.email)
        .join(Prospect, Prospect.id == Enrollment.prospect_id)
        .where(
            Enrollment.team_id == sent.team_id,
            Enrollment.id != sent.enrollment_id,
            Enrollment.state.in_(list(_LIVE)),
            or_(*conditions),
        )
        .order_by(Enrollment.id)
    ).all()
    company = _company_words(prospect, domain, by_domain)
    stopped = 0
    for enrollment_id, prospect_id, other_account, other_email in rows:
        if prospect_id == prospect.id:
            reason = "replied in another sequence"
        elif same_company(account, domain, other_account, other_email):
            reason = f"reply from a colleague at {company}"
        else:
            continue
        if transition(
            session,
            int(enrollment_id),
            EnrollmentState.FINISHED,
            reason,
            from_states=_LIVE,
            event_id=event_id,
            now=now,
            next_step_at=None,
        ):
            stopped += 1
    if stopped:
        log.info(
            "company_stop enrollment_id=%s event_id=%s stopped=%s",
            sent.enrollment_id,
            event_id,
            stopped,
        )
    return stopped


def _company_words(prospect: Prospect, domain: str, by_domain: bool) -> str:
    """How the reason names the company: its domain, else its name or Account."""
    if by_domain:
        return domain
    return prospect.company or f"Salesforce Account {prospect.salesforce_account_id}"
