"""What gl_posting stores encrypted: the accounting connection's OAuth code and tokens."""
from payloop.secrets_rotation import StoredSecrets
from payloop_gl_posting.models import Connection

STORED_SECRETS = StoredSecrets("gl_posting", "accounting credentials", "accounting_connection", tuple(
    (Connection.__table__, column) for column in ("authorization_code_enc", "access_token_enc", "refresh_token_enc")))
