"""The ``jobtrail`` command line: run the system, submit jobs, read status and history.

``app.py`` only builds the typer app from one module per command group: ``run`` (up, demo),
``jobs`` (submit, status, events, list, cancel, requeue: through the HTTP API), ``audit``
(audit, state), ``integrity`` (verify, checkpoint, archive), ``replay``, ``dlq``, ``db`` and
``keys``. What several groups share: ``database`` (the one way to open the log), ``options``
(times and job ids), ``render`` (the history and dead-letter tables), ``client`` (the API),
``console`` (output and errors), ``supervisor`` and ``roles`` (for ``run``).
"""
