"""The Gmail add-on (Google Workspace add-on, HTTP runtime): Google posts events, we answer cards.

    routes.py       the endpoints under /addons/gmail: verify, find the user, answer a card
    auth.py         Google's ID tokens checked: the deployment's service account, the user
    events.py       the event object read (bounded) for what the cards need
    cards.py        card JSON: widgets, navigations, the draft insert
    views.py        Sightline's cards: homepage feed, the people of a message, compose
    deployment.py   the deployment descriptor and `flask --app web gmail-addon deployment`

What is shown and done comes from `web.addons.service` (shared with the Outlook
add-in), always for the Sightline user whose verified email Google vouched for.
"""
