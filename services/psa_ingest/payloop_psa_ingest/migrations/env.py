from payloop.migrations import run_env
from payloop_psa_ingest.models import metadata

run_env(metadata)
