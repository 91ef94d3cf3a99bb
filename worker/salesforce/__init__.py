"""Salesforce activity logging: the outbox, recipient resolution, Task writes."""
