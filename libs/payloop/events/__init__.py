"""The event envelope, the catalogue of event types and their topics."""
from payloop.events.envelope import Envelope, new_event

__all__ = ["Envelope", "new_event"]
