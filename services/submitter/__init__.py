"""The submitter: the HTTP API (and a SubmitJob message subscriber) in front of the log."""
