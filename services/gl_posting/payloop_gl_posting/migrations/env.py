from payloop.migrations import run_env
from payloop_gl_posting.models import metadata

run_env(metadata)
