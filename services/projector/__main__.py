from services.projector.bootstrap import run
from shared.runtime import setup_logging, tune_runtime

setup_logging("projector")
tune_runtime()
run()
