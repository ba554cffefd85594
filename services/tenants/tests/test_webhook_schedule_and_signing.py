"""Units: the retry schedule (growing delays over days) and the published signature scheme."""
import base64
from datetime import timedelta

import pytest

from payloop_tenants.webhooks.schedule import RETRY_SCHEDULE, delay_after
from payloop_tenants.webhooks.signing import new_secret, signature, signature_header


def test_schedule_grows_and_spans_days_then_gives_up():
    delays = [delay_after(n) for n in range(1, len(RETRY_SCHEDULE) + 1)]
    assert delays == list(RETRY_SCHEDULE)
    assert all(later >= earlier for earlier, later in zip(delays, delays[1:]))
    assert delays[0] <= timedelta(seconds=10)
    assert timedelta(days=2) < sum(delays, timedelta()) < timedelta(days=5)
    assert delay_after(len(RETRY_SCHEDULE) + 1) is None
    assert delay_after(2, (timedelta(seconds=1),)) is None
    with pytest.raises(ValueError):
        delay_after(0)


def test_signature_matches_the_standard_webhooks_reference_example():
    # The example from the Standard Webhooks specification (spec/standard-webhooks.md).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    message_id, timestamp = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330
    body = b'{"test": 2432232314}'
    assert signature(secret, message_id, timestamp, body) == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_secrets_are_random_32_byte_keys_and_headers_carry_one_signature_per_secret():
    first, second = new_secret(), new_secret()
    assert first != second and len(base64.b64decode(first.removeprefix("whsec_"))) == 32
    header = signature_header([first, second], "msg_1", 1, b"{}")
    assert header.split(" ") == [signature(first, "msg_1", 1, b"{}"), signature(second, "msg_1", 1, b"{}")]
