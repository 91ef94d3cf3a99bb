"""Open and click tracking: what the web edge, the sender and the events worker share.

Owns the signed tracking tokens (`tokens`), rewriting an HTML body at send time
(`html`), the IP range data files (`ranges`, files under `core/data/`) and the
rules that label a hit `person`, `self`, `apple_proxy`, `google_proxy`,
`scanner` or `bot` (`classify`).

Must never: read the database or Redis (the web edge calls into this on every
pixel load; the events worker brings what it looked up), or log a token, an IP
address or a user agent.
"""
