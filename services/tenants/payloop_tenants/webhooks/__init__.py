"""Partner webhooks: endpoints, fan-out of domain events, signed delivery with retries, replay."""
