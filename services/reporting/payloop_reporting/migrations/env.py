from payloop.migrations import run_env
from payloop_reporting.models import metadata

run_env(metadata)
