"""The durable state: models, engines and sessions, and the schema's migrations.

Redis holds work in flight; this package holds what must last. ``worker.db.models`` has every
table, ``worker.db.session`` builds engines and sessions, ``worker.db.migrate`` moves the
schema to the release's head and tells whether it is behind.
"""
