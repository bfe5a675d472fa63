"""`python -m service` is the jira-status-cache command."""

from service.cli import main

raise SystemExit(main())
