"""`python -m service` is the jira-status-cache command."""

from service.cli.main import main

raise SystemExit(main())
