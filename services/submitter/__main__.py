from services.submitter.bootstrap import run
from shared.runtime import setup_logging, tune_runtime

setup_logging("submitter")
tune_runtime()
run()
