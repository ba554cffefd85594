"""ORM models of the psa_ingest service (its own MetaData, its own database)."""
from payloop.db import Base


class PsaIngestBase(Base):
    __abstract__ = True


metadata = PsaIngestBase.metadata
