"""Benchmarks of jira-status-cache against the origin design and bare baselines."""
