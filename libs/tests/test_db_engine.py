"""The services' database connections plan each execution for its parameters (payloop.db.SERVER_SETTINGS):
a generic plan chosen while a table was empty must not outlive its growth."""
from sqlalchemy import text

from payloop.db import make_engine


async def test_every_connection_plans_each_execution_afresh(infra):
    engine = make_engine(infra.url("postgres"))
    try:
        async with engine.connect() as connection:
            mode = (await connection.execute(text("SHOW plan_cache_mode"))).scalar_one()
    finally:
        await engine.dispose()
    assert mode == "force_custom_plan"
