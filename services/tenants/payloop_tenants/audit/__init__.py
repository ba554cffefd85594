"""The audit log of sensitive actions, recorded by every service and kept here per tenant."""
