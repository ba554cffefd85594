"""What tenants publishes in `tenant.updated` settings is what payments reads (no silent mismatch)."""
from datetime import UTC, datetime

from payloop.tenant_replica import TenantProfile
from payloop_payments.checkout import card_fee_bps
from payloop_payments.domain.retry_policy import RetryPolicy
from payloop_tenants.schemas import TenantWrite


def test_retry_policy_and_stripe_account_reach_payments_as_written():
    written = TenantWrite.model_validate({
        "name": "MSP", "settings": {"payment_retry": {"schedule_days": [2, 6, 9], "do_not_honor_max": 1},
                                    "stripe_account_id": "acct_1Abc"}})
    published = written.model_dump(mode="json")["settings"]  # the data.settings of tenant.updated
    policy = RetryPolicy.from_settings(published)
    assert policy.schedule_days == (2, 6, 9) and policy.do_not_honor_max == 1
    assert published["stripe_account_id"] == "acct_1Abc"


def test_the_tenants_default_is_the_issue_default():
    published = TenantWrite.model_validate({"name": "MSP"}).model_dump(mode="json")["settings"]
    assert RetryPolicy.from_settings(published) == RetryPolicy()
    assert RetryPolicy().schedule_days == (1, 3, 5, 7)


def test_the_card_convenience_fee_reaches_the_checkout_as_written():
    def profile(settings: dict) -> TenantProfile:
        return TenantProfile(tenant_id="t", name="MSP", timezone="UTC", currency="USD", branding={}, updated_at=datetime(2026, 1, 1, tzinfo=UTC),
                             settings=TenantWrite.model_validate({"name": "MSP", "settings": settings})
                             .model_dump(mode="json")["settings"])

    assert card_fee_bps(profile({"convenience_fee": {"card_basis_points": 300}})) == 300
    assert card_fee_bps(profile({})) == 0
