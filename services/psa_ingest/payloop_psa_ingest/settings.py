"""Settings of the psa_ingest service (`PAYLOOP_PSA_INGEST_*`)."""
from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PsaIngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYLOOP_PSA_INGEST_", extra="ignore")

    # Syncs one process runs at once; more wait their turn. A running sync holds a page of up to
    # 1,000 records and their events in memory, so this bounds the process's memory; the database
    # and the consumers, not the number of syncs, bound how fast invoices arrive.
    max_concurrent_syncs: int = Field(3, ge=1, le=64)


@lru_cache
def psa_ingest_settings() -> PsaIngestSettings:
    return PsaIngestSettings()
