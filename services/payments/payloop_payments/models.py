"""ORM models of the payments service (its own MetaData, its own database)."""
from payloop.db import Base


class PaymentsBase(Base):
    __abstract__ = True


metadata = PaymentsBase.metadata
