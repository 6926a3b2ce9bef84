from services.submitter.bootstrap import run
from shared.runtime import setup_logging

setup_logging("submitter")
run()
