"""PostgreSQL: the pool, the migrations, and every SQL statement of the service, as small
typed functions grouped by concern (a table may be written from more than one module)."""
