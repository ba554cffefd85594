"""What psa_ingest stores encrypted: each PSA connection's credentials."""
from payloop.secrets_rotation import StoredSecrets
from payloop_psa_ingest.models import Connection

STORED_SECRETS = StoredSecrets("psa_ingest", "PSA credentials", "psa_connection",
                               ((Connection.__table__, "credentials_encrypted"),))
