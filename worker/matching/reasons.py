"""Why a delivery failed, and whether that failure is hard (the address is dead).

What this module owns: the bounce reason vocabulary (the names follow sisimai's,
so results compare with its public test data), reading a reason from an MTA's
error text and status code, the hard/soft decision, and a real RFC 3463 status
code for a reason when the report states none.

Hard bounce, as sisimai defines it: the reason says the address or its domain
does not exist or has moved (``userunknown``, ``hostunknown``, ``hasmoved``), or
the domain does not accept mail at all (``notaccept``) with a permanent (5xx)
code. Everything else (full mailbox, expired, blocked, spam, policy ...) is soft:
the same address may work later or with different content.

Reading order: the error text decides first, as it is more precise than the
code (``550 5.1.1 mailbox full`` is a full mailbox); the status code decides when
the text says nothing we recognise.
"""

from __future__ import annotations

import re

from worker.matching.reason_wording import Wording, active

__all__ = ["HARD_REASONS", "WORDING", "is_hard", "reason_for", "status_for_reason"]

HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved"})

# Ordered: the first reason whose pattern matches wins. More specific reasons
# come before the broad ones that share words with them ("mailbox full" before
# "mailbox unavailable"; "relay denied" before "denied").
_TEXT_RULES: tuple[tuple[str, str], ...] = (
    (
        "mailboxfull",
        r"mailbox (?:is |was )?full|mailbox.{0,20}over.?quota|over.?quota|quota.{0,20}exceed"
        r"|exceed.{0,30}(?:quota|storage allocation)|mailbox.{0,30}(?:size limit|storage limit)"
        r"|user.{0,20}(?:is over|has exceeded).{0,20}(?:quota|limit)|disk quota"
        r"|account is full|mailbox (?:is )?(?:currently )?over|too many messages in"
        r"|insufficient.{0,15}mailbox|benutzer hat zuviele|boite (?:aux lettres )?pleine"
        r"|mail ?box ?full|maildir.{0,10}quota|not enough (?:storage|space) in",
    ),
    (
        "mesgtoobig",
        r"message (?:is )?too (?:big|large)|message size.{0,30}exceed|exceeds?.{0,30}"
        r"(?:size limit|maximum (?:message )?size|message size)|message length exceeds"
        r"|size of .{0,30}exceeds|mail size limit",
    ),
    (
        "suspend",
        r"(?:mailbox|account|address|user|recipient).{0,40}(?:is |has been )?"
        r"\b(?:disabled|suspended|deactivated|inactive|frozen|locked|expired|closed)\b"
        r"|(?:disabled|suspended|inactive|closed) (?:mailbox|account|recipient)|temporar\w* locked"
        r"|mailbox (?:is )?(?:temporarily )?unavailable.{0,20}(?:suspend|disabled)",
    ),
    (
        "hasmoved",
        r"has moved|address has changed|no longer (?:at|with) this|moved permanently",
    ),
    (
        "norelaying",
        r"relay(?:ing)? (?:access )?(?:denied|not (?:permitted|allowed))|not permitted to relay"
        r"|unable to relay|we do not relay|relay not permitted|relaying (?:is )?prohibited"
        r"|not (?:an )?open relay|relaying mail to .{0,40}not allowed|relay access",
    ),
    (
        "authfailure",
        r"\bspf\b|\bdkim\b|\bdmarc\b|sender policy framework|authentication checks"
        r"|not authenticated|authentication (?:has )?failed|unauthenticated email",
    ),
    (
        "notaccept",
        r"does not accept (?:any )?(?:e-?)?mail|not accepting (?:any )?(?:e-?)?mail|null mx"
        r"|indicated no smtp service"
        r"|doesn't receive (?:e-?)?mail|couldn't find a mail exchanger",
    ),
    (
        "requireptr",
        r"reverse dns|reverse (?:dns )?lookup|\bptr\b|\brdns\b|no reverse|reverse mapping"
        r"|hostname (?:does not|doesn't) match|cannot find your hostname|ip name lookup",
    ),
    (
        "filtered",
        r"recipient(?:'s)? preferences|(?:refused|rejected|blocked) by (?:the )?(?:recipient|user)"
        r"|recipient (?:has )?(?:refused|rejected|blocked)|user refused|mail filter"
        r"|(?:message|mail|content) (?:was |has been |is )?filtered"
        r"|(?:refused|rejected|declined|blocked) (?:due to|because of) (?:the )?recipient",
    ),
    (
        "userunknown",
        r"user ?unknown|unknown (?:user|recipient|local.?part|address|mailbox)|no such (?:user"
        r"|mailbox|recipient|address|local user|account)|(?:user|mailbox|recipient|address"
        r"|account|addressee)s? (?:name )?(?:is )?(?:not found|not exist|does not exist"
        r"|doesn't exist|unknown|invalid|not listed|not valid|no longer (?:exists|valid))"
        r"|(?:recipient|mailbox|address|user|account)(?: address)? (?:does not|doesn't) exist"
        r"|invalid (?:recipient|mailbox|address|user)|(?:not a|isn't a) valid (?:user|mailbox"
        r"|recipient|address)|recip(?:ient)?notfound|recipient not found|no mailbox here"
        r"|bad destination mailbox|not our customer|not listed in|no valid recipients?"
        r"|invalid .{0,20}userid|(?:user|recipient) (?:doesn't|does not) have an? .{0,40}account"
        r"|user not (?:found|exist)|unknown address error|email account that you tried to"
        r" reach does not exist|recipient address rejected: (?:user|undeliverable|access)"
        r"|mailbox unavailable|address (?:is )?unavailable|not a known user"
        r"|no (?:such )?(?:user|mailbox) (?:here|by that name)|unknown or illegal alias"
        r"|(?:user|recipient) (?:lookup|verification) failed|unable to find (?:user|recipient)"
        r"|addressee unknown|mailbox not found|destination (?:address|mailbox) (?:invalid|unknown)"
        r"|is not a valid mailbox|non-?existent (?:user|mailbox|recipient|address)",
    ),
    (
        "rejected",
        r"sender (?:address )?(?:rejected|refused|denied|verify failed|is invalid|unknown)"
        r"|domain of sender|sender domain|invalid sender|bad sender|sender verification"
        r"|address of the sender|return path|envelope sender|from address|mail from"
        r"|sender .{0,30}(?:not allowed|does not exist)|(?:provide )?a valid from:"
        r"|\bfrom:? (?:\w+ ){0,2}(?:domain|address) (?:is )?(?:invalid|unknown|not (?:valid"
        r"|allowed|found))",
    ),
    (
        "hostunknown",
        r"host (?:or domain name )?not found|unknown host|host unknown|domain (?:name )?not found"
        r"|no such domain|domain (?:does not|doesn't) exist|unrouteable (?:mail )?domain"
        r"|name or service not known|nxdomain|all relevant mx records point|no mx (?:record|host)"
        r"|domain .{0,40}has no mx|host name lookup failure|unrouteable address"
        r"|bad destination system|domain (?:is )?(?:invalid|unknown)|unknown domain"
        r"|domain may not exist"
        r"|domain (?:is )?not reachable|illegal host|invalid host|bad host|no such host"
        r"|(?<![@\w.-])[a-z0-9-]+(?:\.[a-z0-9-]+)+ does not exist"
        r"|dns error: domain|domain name not found|no valid host|couldn't find any host",
    ),
    # General wording, by meaning rather than by any one server's sentence: a
    # thing that names the address (or the domain) next to a word that says it
    # does not exist. After every more specific reason above, which may share words.
    (
        "userunknown",
        r"\b(?:user|recipient|mailbox|address|account|addressee|userid|local.?part|person)s?\b"
        r"(?:[^.;]|\.(?! )){0,60}\b(?:unknown|invalid|illegal"
        r"|not (?:found|listed|known|valid|recogni[sz]ed)"
        r"|(?:does not|doesn't|do not|did not|no longer) exist|non-?existent|nonexisting)"
        r"|\b(?:unknown|invalid|illegal|no such|non-?existent|no valid|unrecogni[sz]ed|bad)"
        r" (?:\w+ ){0,2}(?:user|recipient|mailbox|address|account|addressee|userid)s?\b",
    ),
    (
        "hostunknown",
        r"\b(?:domain|host|hostname|mail exchanger|mx)s?\b(?:[^.;]|\.(?! )){0,60}\b(?:unknown"
        r"|invalid|illegal|not (?:found|known|valid|resolv\w*)|unresolvable"
        r"|(?:does not|doesn't|did not|no longer) exist|non-?existent)"
        r"|\b(?:unknown|invalid|illegal|no such|non-?existent|unresolvable|unroutable"
        r"|unrouteable) (?:\w+ ){0,2}(?:domain|host|hostname)s?\b"
        r"|\bno (?:mx|mail exchanger|dns|a) (?:or a )?(?:records?|hosts?|entry|entries)"
        r"|\b(?:could not|couldn't|cannot|can't|unable to|failed to) (?:find|locate|resolve"
        r"|look ?up) (?:a |an |any |the )?(?:mail exchanger|mx|mail host|domain|host ?name)",
    ),
    (
        "notaccept",
        r"\b(?:does not|doesn't|do not|will not|won't|cannot|can't) (?:accept|receive)\w*"
        r" (?:any |incoming )?(?:e-?)?mails?\b|\bno (?:smtp|mail) service\b|\bnull mx\b",
    ),
    (
        "virusdetected",
        r"virus|malware|infected|trojan",
    ),
    (
        "spamdetected",
        r"spam(?!haus|cop)|junk mail|unsolicited|bulk mail|\bubc?e\b|content filter.{0,30}rejected"
        r"|message (?:looks|considered) suspicious",
    ),
    (
        "badreputation",
        r"reputation",
    ),
    (
        "blocked",
        r"black.?list|block.?list|blocked (?:using|by|due)|(?<!not )listed (?:at|in|on|by)|\brbl\b"
        r"|\bdnsbl\b|client host .{0,60}(?:blocked|rejected|refused)"
        r"|connection (?:refused|rejected)"
        r"|(?:ip|address|host|network).{0,40}(?:blocked|banned|blacklisted|denied)"
        r"|access denied|not allowed to send|refused to talk|your access to this mail system"
        r"|poor reputation|sender ip|ip .{0,30}(?:rejected|not allowed)|too many invalid",
    ),
    (
        "toomanyconn",
        r"too many (?:connections|concurrent|simultaneous|sessions|smtp)|connection limit"
        r"|too many recipients",
    ),
    (
        "speeding",
        r"rate limit|rate.?limited|too many messages|sending rate|too fast|try again later.{0,40}"
        r"exceed|exceeded.{0,30}(?:rate|limit) for|temporarily deferred due to",
    ),
    (
        "policyviolation",
        r"policy|prohibited|not allowed|attachment.{0,30}(?:blocked|rejected|not permitted)",
    ),
    (
        "expired",
        r"expired|retry time|could not be delivered (?:for|within)|too long in (?:the )?queue"
        r"|giving up|unable to deliver in|delivery (?:time|period) (?:expired|exceeded)"
        r"|older than|cannot send message for|has been delayed|delayed \d+|message timed out",
    ),
    (
        "networkerror",
        r"routing loop|mail loop|loop detected|too many hops|hop count|network (?:is )?unreachable"
        r"|no route to host|timed? ?out|unable to connect|could not connect|connection (?:lost"
        r"|dropped|reset)|dns (?:lookup )?(?:failure|error)|temporary dns|socket error",
    ),
    (
        "systemfull",
        r"insufficient (?:system|disk) (?:storage|space)|disk (?:is )?full|system (?:is )?full"
        r"|no space left",
    ),
    (
        "mailererror",
        r"mailer error|command (?:died|failed|output)|procmail|\bx-unix\b|pipe to"
        r"|exit (?:code|status)"
        r"|local delivery failed|unknown mailer",
    ),
    (
        "notcompliantrfc",
        r"rfc ?(?:2822|5322|5321|822)|not (?:rfc.)?compliant|multiple (?:from|subject|date|to)"
        r"|duplicate header|header (?:is )?(?:invalid|malformed)",
    ),
    (
        "contenterror",
        r"content (?:error|rejected|not allowed)|mime|8-?bit|encoding|media (?:not )?supported",
    ),
    (
        "securityerror",
        r"authentication required|tls required|must issue a starttls|encryption required"
        r"|starttls|certificate|not authori[sz]ed",
    ),
    (
        "syntaxerror",
        r"syntax error|command (?:not )?(?:recognized|unrecognized)|bad sequence",
    ),
    (
        "systemerror",
        r"system error|internal (?:server )?error|configuration error|local error"
        r"|temporary (?:local|server) (?:error|failure)|mail system (?:error|problem)"
        r"|server (?:error|failure)|service unavailable|not available",
    ),
)

# "-smtp command", not "-+smtp command": a run of dashes started a scan at each
# of its dashes (quadratic); the match only ever mattered for its group.
_COMMAND = re.compile(
    r"(?:in reply to (?:end of )?|after (?:end of )?|>>> ?|smtp command:? ?|-smtp command\s*)"
    r"(data|rcpt to|mail from|rcpt|mail|ehlo|helo)\b",
    re.IGNORECASE,
)

_TRANSCRIPT = re.compile(
    r">>> ?(data|rcpt to|mail from|rcpt|mail|ehlo|helo)\b[^\n]*\n\s*<<< ?[45]\d\d",
    re.IGNORECASE,
)

_RELAYED_ANSWER = re.compile(r"(?<![\d.])5\d\d(?![\d.])", re.IGNORECASE)
_RECIPIENT_STAGE = re.compile(
    r"recipient address rejected|rejected (?:the )?(?:recipient )?address|like recipient"
    r"|rcpt|recipient (?:was )?rejected",
    re.IGNORECASE,
)

WORDING = Wording(_TEXT_RULES)
# Held here as well so every pattern of the mail modules is found and checked
# for linear time (tests/unit/matching/test_regex_linear.py).
_COMPILED = WORDING.compiled

# RFC 3463 subject.detail codes to the reason they name.
_STATUS_REASON = {
    "1.0": "userunknown",
    "1.1": "userunknown",
    "1.2": "hostunknown",
    "1.3": "userunknown",
    "1.4": "filtered",
    "1.6": "hasmoved",
    "1.7": "rejected",
    "1.8": "rejected",
    "1.9": "systemerror",
    "1.10": "notaccept",
    "2.0": "filtered",
    "2.1": "filtered",
    "2.2": "mailboxfull",
    "2.3": "exceedlimit",
    "2.4": "filtered",
    "3.0": "systemerror",
    "3.1": "systemfull",
    "3.2": "notaccept",
    "3.3": "systemerror",
    "3.4": "mesgtoobig",
    "3.5": "systemerror",
    "4.0": "networkerror",
    "4.1": "expired",
    "4.2": "networkerror",
    "4.3": "systemerror",
    "4.4": "networkerror",
    "4.5": "toomanyconn",
    "4.6": "networkerror",
    "4.7": "expired",
    "5.3": "toomanyconn",
    "5.4": "systemerror",
    "5.5": "systemerror",
    "6.0": "contenterror",
    "7.0": "securityerror",
    "7.1": "blocked",
    "7.2": "blocked",
    "7.13": "suspend",
    "7.17": "hasmoved",
    "7.18": "hasmoved",
    "7.25": "blocked",
    "7.26": "authfailure",
    "7.27": "rejected",
}

# A real code for a reason, used only when the report states no code at all.
_REASON_STATUS = {
    "userunknown": "5.1.1",
    "hostunknown": "5.1.2",
    "hasmoved": "5.1.6",
    "notaccept": "5.1.10",
    "mailboxfull": "5.2.2",
    "exceedlimit": "5.2.3",
    "mesgtoobig": "5.3.4",
    "filtered": "5.2.0",
    "suspend": "5.2.1",
    "rejected": "5.1.8",
    "systemfull": "5.3.1",
    "systemerror": "5.3.0",
    "networkerror": "5.4.0",
    "expired": "5.4.7",
    "toomanyconn": "5.4.5",
    "norelaying": "5.7.1",
    "blocked": "5.7.1",
    "spamdetected": "5.7.1",
    "virusdetected": "5.7.1",
    "policyviolation": "5.7.1",
    "authfailure": "5.7.26",
    "requireptr": "5.7.25",
    "securityerror": "5.7.0",
    "contenterror": "5.6.0",
    "notcompliantrfc": "5.6.0",
    "syntaxerror": "5.5.2",
    "mailererror": "5.3.0",
    "badreputation": "5.7.1",
    "speeding": "4.7.0",
}


# PowerMTA writes its own verdict per recipient (X-PowerMTA-BounceCategory);
# where it names one of our reasons it is more reliable than reading the text.
_VENDOR_CATEGORY = {
    "bad-mailbox": "userunknown",
    "bad-domain": "hostunknown",
    "inactive-mailbox": "suspend",
    "quota-issues": "mailboxfull",
    "message-expired": "expired",
    "no-answer-from-host": "networkerror",
    "bad-connection": "networkerror",
    "spam-related": "spamdetected",
    "virus-related": "virusdetected",
    "policy-related": "policyviolation",
    "content-related": "contenterror",
    "relaying-issues": "norelaying",
    "invalid-sender": "rejected",
    "protocol-errors": "syntaxerror",
}


def reason_for_category(category: str) -> str | None:
    """The reason an MTA's own bounce category names, or None."""
    return _VENDOR_CATEGORY.get(category.strip().lower())


def reason_for(text: str, status: str, context: str = "") -> str:
    """Sisimai-style reason name for an error text and its status code.

    ``text`` is the error itself (a Diagnostic-Code, the lines about one
    recipient); ``context`` is the report's wider text, read when ``text`` says
    nothing recognisable, and for the SMTP command the error answered.
    Returns ``"onhold"`` when there was text but nothing recognisable in it,
    ``"undefined"`` when there was nothing at all.
    """
    by_status = reason_from_status(status)
    if by_status == "hasmoved":
        # RFC 3463 X.1.6 / X.7.17 / X.7.18 say exactly what happened; MTAs'
        # texts for it vary ("551 not our user") and read like other reasons.
        return by_status
    reason = reason_from_text(text) or reason_from_text(context) or by_status
    if reason is None:
        return "onhold" if (text + context).strip() else "undefined"
    reason = _after_command(reason, smtp_command(text, context), status)
    if (
        reason == "userunknown"
        and not smtp_command(text, context)
        and status[1:3] != ".1"
        and _RELAYED_ANSWER.search(" ".join((text or context).split()))
        and not _RECIPIENT_STAGE.search(text + "\n" + context)
    ):
        return "filtered"
    return reason


def reason_from_text(text: str) -> str | None:
    """The first reason whose wording appears in ``text``, or None."""
    flat = " ".join(text.split())
    if flat.lower().startswith("x-unix;"):
        # A local delivery program failed, whatever it printed.
        return "mailererror"
    return active(WORDING).reason(flat)


def reason_from_status(status: str) -> str | None:
    """The reason an RFC 3463 status code names, or None for generic codes."""
    parts = status.split(".")
    if len(parts) != 3:
        return None
    return _STATUS_REASON.get(f"{parts[1]}.{parts[2]}")


def smtp_command(text: str, context: str = "") -> str:
    """The SMTP command an error answered (``DATA``, ``RCPT``, ``MAIL`` ...), or ``""``.

    A session transcript (``>>> RCPT To:<a>`` then ``<<< 550 ...``) names the
    command of its first refused exchange; otherwise the last "in reply to ..." /
    "after ..." phrase of ``text`` counts, then that of ``context``.
    """
    for source in (text, context):
        refused = _TRANSCRIPT.search(source)
        if refused:
            return refused.group(1).split()[0].upper()
        found = _COMMAND.findall(source)
        if found:
            return str(found[-1]).split()[0].upper()
    return ""


def _after_command(reason: str, command: str, status: str) -> str:
    """Sisimai's reading of when an error came: after DATA a "user unknown" whose
    code does not itself say so is a content filter speaking (the recipient was
    accepted at RCPT); at MAIL FROM an unknown user or domain is the sender's."""
    if reason == "hostunknown" and status.startswith("4."):
        # "Host not found" with a transient status is a DNS lookup that failed
        # this time (SERVFAIL, timeout), not a domain that does not exist.
        return "networkerror"
    if reason == "userunknown" and status[2:4] == "7.":
        # "550 5.7.1 User unknown": a policy code on a user error is a filter speaking.
        return "filtered"
    if command == "DATA" and reason == "userunknown" and reason_from_status(status) != reason:
        return "filtered"
    if command == "MAIL" and reason in ("userunknown", "hostunknown"):
        return "rejected"
    return reason


def is_hard(reason: str, status: str) -> bool:
    """True if the failure means the address itself is dead (see module docstring)."""
    if reason in HARD_REASONS:
        return True
    return reason == "notaccept" and not status.startswith("4")


def status_for_reason(reason: str, temporary: bool) -> str:
    """A real status code standing for ``reason`` when the report gave none."""
    code = _REASON_STATUS.get(reason, "5.0.0")
    if temporary:
        code = "4" + code[1:]
    return code
