"""The Stripe gateway is shared by the API, the webhooks and the scheduler: the service closes its
connections at its stop (`ServiceDefinition.on_stop`), once all of them are done."""
from payloop.testing.plugin import running_service

from payloop_payments import api
from payloop_payments.service import SERVICE


async def test_the_stripe_gateways_connections_are_closed_when_the_service_stops(infra, stripe_env):
    async with running_service(infra, SERVICE, consumers=False, relay=False) as client:
        session = api.gateway_of(client.app)._http._session  # what its Stripe requests go through
        assert not session.closed
        tasks = client.app.state.tasks
    assert session.closed
    assert all(task.done() for task in tasks)  # the scheduler had stopped before
