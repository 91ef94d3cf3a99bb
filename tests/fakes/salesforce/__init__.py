"""A local fake Salesforce org that speaks the real wire format over TLS.

Tests drive the real ``simple_salesforce`` client (and plain ``requests`` for
OAuth) against it: REST API v31.0 to v66.0 (simple-salesforce 1.12 defaults to
59.0) with SOQL, sObject rows and Collections, describe, limits, Bulk API 2.0
ingest, OAuth 2.0 token grants, SOAP ``login()``, the daily API allowance with
``Sforce-Limit-Info``, expiring sessions, and injected faults. Each module's
docstring says what it models and what it does not:

- ``server``  FakeSalesforce (thread or process), FakeSalesforceProcess, AdminClient
- ``app``     the WSGI app: REST resources, OAuth and SOAP login, admin API
- ``store``   records, save rules, the API allowance
- ``schema``  sObjects and fields, describe
- ``soql``    the SOQL subset
- ``oauth``   token grants and access tokens
- ``faults``  deterministic fault injection
- ``bulk``    Bulk API 2.0 ingest jobs

It is a test double: no sharing, triggers, validation rules or governor limits
beyond those listed, and one org per server.
"""

from .errors import ApiError, RecordError, checksum_suffix, normalize_id
from .faults import KINDS as FAULT_KINDS
from .faults import Fault, Faults
from .oauth import generate_rsa_keypair, make_jwt
from .schema import COUNTER_FIELDS, EXT_ID_FIELD
from .server import AdminClient, FakeSalesforce, FakeSalesforceProcess
from .store import OrgConfig

__all__ = [
    "COUNTER_FIELDS",
    "EXT_ID_FIELD",
    "FAULT_KINDS",
    "AdminClient",
    "ApiError",
    "FakeSalesforce",
    "FakeSalesforceProcess",
    "Fault",
    "Faults",
    "OrgConfig",
    "RecordError",
    "checksum_suffix",
    "generate_rsa_keypair",
    "make_jwt",
    "normalize_id",
]
