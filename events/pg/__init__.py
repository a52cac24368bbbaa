"""The event store on PostgreSQL (``TIMELINE_DB=postgresql://...``): docs/postgresql.md.

``connect``: connections, the reader pool and advisory-lock keys; ``migrations``: the store's
schema (the same tables and columns as on SQLite); ``store``: ``PgEventStore``.
"""
