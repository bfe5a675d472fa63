"""The SQL migrations, numbered and forward only; installed as the package service.migrations."""
