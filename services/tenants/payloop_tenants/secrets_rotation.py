"""What the tenants service stores encrypted: partner webhook signing secrets (current and previous).

(Rotating a partner's signing secret itself is another thing: `POST /v1/webhook-endpoints/{id}/rotate-secret`.)"""
from payloop.secrets_rotation import StoredSecrets
from payloop_tenants.models import WebhookEndpoint

STORED_SECRETS = StoredSecrets("tenants", "webhook signing secrets", "tenant", (
    (WebhookEndpoint.__table__, "secret_encrypted"), (WebhookEndpoint.__table__, "previous_secret_encrypted")))
