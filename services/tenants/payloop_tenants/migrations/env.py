from payloop.migrations import run_env
from payloop_tenants.models import metadata

run_env(metadata)
