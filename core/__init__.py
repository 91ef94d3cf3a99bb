"""What web and worker share: models, database, Redis, tokens, credentials, events."""
