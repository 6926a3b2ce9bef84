from services.projector.bootstrap import run
from shared.runtime import setup_logging

setup_logging("projector")
run()
