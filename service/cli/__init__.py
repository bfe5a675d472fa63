"""The command-line front door: serve, migrate, check, refresh and the rest."""
