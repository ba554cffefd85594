"""ORM models of the gl_posting service (its own MetaData, its own database)."""
from payloop.db import Base


class GlPostingBase(Base):
    __abstract__ = True


metadata = GlPostingBase.metadata
