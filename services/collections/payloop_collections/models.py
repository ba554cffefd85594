"""ORM models of the collections service (its own MetaData, its own database)."""
from payloop.db import Base


class CollectionsBase(Base):
    __abstract__ = True


metadata = CollectionsBase.metadata
