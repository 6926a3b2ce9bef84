from services.worker.bootstrap import run
from shared.runtime import setup_logging, tune_runtime

setup_logging("worker")
tune_runtime()
run()
