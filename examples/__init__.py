"""Example job types for the demo, the tests and the benchmarks; production loads none.

``jobtrail up`` and ``jobtrail demo`` load ``examples.jobs`` unless JOBTRAIL_JOB_MODULES is set;
a deployment names its own modules in JOBTRAIL_JOB_MODULES (or ``examples.jobs`` to try these).
"""
