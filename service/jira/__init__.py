"""The Jira REST client: bulk reads, auth, pacing and its errors."""
