"""What tenants publishes in `tenant.updated` settings is what payments reads (no silent mismatch)."""
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
