from services.worker.bootstrap import run
from shared.runtime import setup_logging

setup_logging("worker")
run()
