"""`python -m service.simulator`: the same as `jira-status-cache simulate`."""

from __future__ import annotations

import sys

from . import main

sys.exit(main())
