"""SQL checkpoint stores: SqliteStore and PostgresStore, their schema and its migrations."""
