"""Prospect time zones and send windows: pure functions over IANA names, no I/O.

`names` validates a zone name strictly; `inference` guesses a prospect's zone
from a Salesforce address, a phone number or the email domain (`tables` holds
the compact country and state tables it reads); `windows` computes when a
sequence's send window next opens in a zone, across DST changes and year ends.
"""
