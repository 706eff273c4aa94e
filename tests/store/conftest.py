from tests.store.databases import db, db_url, empty_db  # noqa: F401  (pytest fixtures)
