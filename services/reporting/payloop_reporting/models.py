"""ORM base of the reporting service (its own MetaData, its own database).

The read-model tables are defined by the migrations (0002) and written by set-based SQL in
`read_models.py`: every write is a conditional upsert or a multi-table refresh, which SQL states
more plainly than the ORM. So this metadata declares no tables, and Alembic autogenerate is not used.
"""
from payloop.db import Base


class ReportingBase(Base):
    __abstract__ = True


metadata = ReportingBase.metadata
