"""The node's durable state: SQLite (WAL) for protocol state, inbox, outbox and the audit trail."""
