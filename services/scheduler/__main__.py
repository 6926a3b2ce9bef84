from services.scheduler.bootstrap import run
from shared.runtime import setup_logging, tune_runtime

setup_logging("scheduler")
tune_runtime()
run()
