"""The ``jobtrail`` command line: run the system, submit jobs, read status and history."""
