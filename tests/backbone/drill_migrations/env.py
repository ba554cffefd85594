from sqlalchemy import MetaData

from payloop.migrations import run_env

run_env(MetaData())
