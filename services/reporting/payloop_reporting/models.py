"""ORM models of the reporting service (its own MetaData, its own database)."""
from payloop.db import Base


class ReportingBase(Base):
    __abstract__ = True


metadata = ReportingBase.metadata
