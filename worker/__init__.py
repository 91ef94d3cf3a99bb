"""Background work: RQ jobs, mailbox sync, matching, sequences, Salesforce logging."""
