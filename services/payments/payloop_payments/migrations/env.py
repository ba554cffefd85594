from payloop.migrations import run_env
from payloop_payments.models import metadata

run_env(metadata)
