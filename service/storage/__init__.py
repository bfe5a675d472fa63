"""PostgreSQL: the pool, migrations, and SQL over each table, one owner a table."""
