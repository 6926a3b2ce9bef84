"""The worker claims scheduled jobs, runs their handlers and records the outcome."""
