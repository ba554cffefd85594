from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet

from payloop.checkout_links import InvalidCheckoutLink, mint_checkout_token, verify_checkout_token
from payloop.secrets import SecretBox, SecretError, mask


def test_secrets_rotate_to_the_newest_key_and_old_keys_still_decrypt():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    stored = SecretBox([old]).encrypt("cw-private-key-123")
    rotated_box = SecretBox([new, old])
    assert rotated_box.decrypt(stored) == "cw-private-key-123"
    rotated = rotated_box.rotate(stored)
    assert SecretBox([new]).decrypt(rotated) == "cw-private-key-123"
    with pytest.raises(SecretError, match="no longer configured"):
        SecretBox([new]).decrypt(stored)
    assert "cw-private" not in stored and mask("cw-private-key-123") == "****-123"


@pytest.fixture
def link_key(monkeypatch):
    from payloop.settings import platform_settings

    monkeypatch.setenv("PAYLOOP_CHECKOUT_LINK_KEY", "test-link-key-0123456789abcdef0123456789")
    platform_settings.cache_clear()
    yield
    monkeypatch.delenv("PAYLOOP_CHECKOUT_LINK_KEY")
    platform_settings.cache_clear()


def test_checkout_link_is_scoped_signed_and_expiring(link_key):
    token = mint_checkout_token("t1", "c9", ["inv-2", "inv-1"], ttl=timedelta(hours=1))
    grant = verify_checkout_token(token)
    assert (grant.tenant_id, grant.client_id, grant.invoice_ids) == ("t1", "c9", ("inv-1", "inv-2"))
    body, signature = token.split(".")
    forged = mint_checkout_token("t2", "c9", ["inv-1"]).split(".")[0] + "." + signature
    with pytest.raises(InvalidCheckoutLink, match="signature"):
        verify_checkout_token(forged)
    with pytest.raises(InvalidCheckoutLink, match="expired"):
        verify_checkout_token(token, now=datetime.now(UTC) + timedelta(hours=2))
    with pytest.raises(InvalidCheckoutLink, match="malformed"):
        verify_checkout_token("garbage")


def test_production_refuses_to_sign_links_without_a_configured_key(monkeypatch):
    from payloop.settings import platform_settings

    monkeypatch.setenv("PAYLOOP_ENV", "prod")
    monkeypatch.delenv("PAYLOOP_CHECKOUT_LINK_KEY", raising=False)
    platform_settings.cache_clear()
    try:
        with pytest.raises(InvalidCheckoutLink, match="must be set in production"):
            mint_checkout_token("t1", "c1", ["i1"])
    finally:
        platform_settings.cache_clear()
