"""Pure payment rules (allocation, retries): no I/O, so they are unit-tested in milliseconds."""
