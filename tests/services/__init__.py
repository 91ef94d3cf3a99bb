"""Real servers the test suite runs against: Redis, PostgreSQL, Dovecot, SMTP.

Each module owns one server and knows how to find or start it, and how to stop
what it started; `fixtures` turns them into pytest fixtures. `scripts/test-prereqs.sh`
installs what they need. Nothing here is imported by application code.
"""
