from services.scheduler.bootstrap import run
from shared.runtime import setup_logging

setup_logging("scheduler")
run()
