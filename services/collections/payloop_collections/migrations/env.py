from payloop.migrations import run_env
from payloop_collections.models import metadata

run_env(metadata)
