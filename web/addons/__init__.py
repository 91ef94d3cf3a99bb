"""What the Gmail add-on and the Outlook add-in stand on: one service, no Flask.

`web.addons.service` is the interface both add-ons (and API v1's
`web/api/addons.py`) call with a database session and a Sightline user id.
"""
