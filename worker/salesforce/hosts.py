"""Which hosts Salesforce calls may go to, and the HTTP session that holds to it.

The Connected App's secret, a refresh token or a bearer token goes wherever a
Salesforce URL points. A URL a *team* supplies (`login_url` when connecting)
and a URL a *token answer* names (`instance_url`, the identity `id`) must
therefore be Salesforce's own, or the operator's:

- Salesforce's login hosts `login.salesforce.com` and `test.salesforce.com`;
- My Domain hosts: ``<name>.my.salesforce.com`` (production; legacy sandboxes
  ``<name>--<sandbox>.my.salesforce.com``), sandboxes with enhanced domains
  ``<name>--<sandbox>.sandbox.my.salesforce.com``, and the partitioned domains
  ``<name>.<partition>.my.salesforce.com`` for the partitions Salesforce
  documents (develop, demo, patch, scratch, trailblaze, free);
- legacy instance hosts ``<instance>.salesforce.com`` (na30, cs42, eu5...),
  which older token answers still name;
- the origins of the operator's own settings (`SALESFORCE_LOGIN_URL`,
  `SALESFORCE_INSTANCE_URL`): the operator may point those anywhere.

Sources (2026-12): Salesforce Help "My Domain URL Formats"; the Tooling API's
OrgDomainLog.DomainPartition values (demo, develop, free, patch, sandbox,
scratch, trailblaze; "MyDomainName.develop.my.salesforce.com" is its example);
"https://MyDomainName--SandboxName.sandbox.my.salesforce.com for sandboxes or
scratch orgs" (forcedotcom/postman-salesforce-apis); Trailhead's
"https://na30.salesforce.com" for instance URLs. Custom domains (a company's
own name in front of Salesforce) are not accepted from a team: the operator
can set one as SALESFORCE_LOGIN_URL.

Team hosts are https on port 443, lower-case ASCII, no userinfo, no path.
`salesforce_session()` enforces the same rule on every request it sends, and
the outbound policy (`core.outbound`: resolved, every address checked, the
connection pinned) on every connection to a non-operator host, so a stored URL
is checked again each time it is used.
"""

from __future__ import annotations

import re
from typing import TypeVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from config import get_settings
from core.outbound import OutboundError, split_url
from core.outbound_http import PinnedHTTPAdapter

SessionT = TypeVar("SessionT", bound=requests.Session)

_NAME = r"[a-z0-9](?:[a-z0-9-]{0,78}[a-z0-9])?"  # a My Domain name, with --sandbox
PARTITIONS = ("sandbox", "develop", "demo", "patch", "scratch", "trailblaze", "free")
_SALESFORCE_HOST = re.compile(
    r"(?:login|test)\.salesforce\.com"
    rf"|{_NAME}(?:\.(?:{'|'.join(PARTITIONS)}))?\.my\.salesforce\.com"
    r"|[a-z]{2,5}[0-9]{1,4}(?:-s)?\.salesforce\.com"
)


def is_salesforce_host(host: str) -> bool:
    """True for Salesforce's login, My Domain and instance hosts (see the module docstring)."""
    return bool(_SALESFORCE_HOST.fullmatch(host))


def operator_origins() -> frozenset[tuple[str, str, int]]:
    """(scheme, host, port) of the operator's Salesforce settings: trusted as they are."""
    settings = get_settings().salesforce
    origins = set()
    for url in (settings.login_url, settings.instance_url):
        if not url:
            continue
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
        if host:
            origins.add((scheme, host, parts.port or (443 if scheme == "https" else 80)))
    return frozenset(origins)


def refusal(scheme: str, host: str, port: int) -> str | None:
    """Why a Salesforce call may not go to scheme://host:port (None: it may)."""
    if (scheme, host, port) in operator_origins():
        return None
    if not is_salesforce_host(host):
        return (
            f"{host} is not a Salesforce host (login.salesforce.com, test.salesforce.com "
            "or your My Domain, such as https://yourcompany.my.salesforce.com)"
        )
    if scheme != "https" or port != 443:
        return f"{host}: Salesforce is reached over https on port 443"
    return None


def checked_url(url: str, field: str) -> str:
    """`url` as ``https://host`` (``scheme://host:port`` for an operator origin), if allowed.

    Used on a team's `login_url` and on the `instance_url` of every token answer.

    Raises:
        OutboundError: the URL is malformed, has a path, or names another host;
            the message starts with `field`.
    """
    try:
        scheme, host, port = split_url(url, schemes=("https", "http"))
    except OutboundError as exc:
        raise OutboundError(f"{field}: {exc}") from None
    parts = urlsplit(url)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise OutboundError(f"{field}: expected https://host alone, without a path")
    why = refusal(scheme, host, port)
    if why is not None:
        raise OutboundError(f"{field}: {why}")
    default = 443 if scheme == "https" else 80
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" + ("" if port == default else f":{port}")


def guard_session(session: SessionT) -> SessionT:
    """Mount the Salesforce rule on `session`: operator origins as they are, others pinned.

    requests picks the adapter with the longest matching prefix; the operator's
    origins are mounted with a trailing slash, so ``https://login.salesforce.com.evil``
    never matches ``https://login.salesforce.com/``: anything that does not match
    falls through to the strict adapter.
    """
    strict = PinnedHTTPAdapter(purpose="Salesforce", permit=refusal, schemes=("https", "http"))
    session.mount("https://", strict)
    session.mount("http://", strict)
    plain = HTTPAdapter()
    for scheme, host, port in operator_origins():
        shown = f"[{host}]" if ":" in host else host
        session.mount(f"{scheme}://{shown}:{port}/", plain)
        if port == (443 if scheme == "https" else 80):
            session.mount(f"{scheme}://{shown}/", plain)
    return session


def salesforce_session() -> requests.Session:
    """A new requests session for Salesforce calls (token grants, revokes, identity)."""
    return guard_session(requests.Session())
