"""The `payloop` operator CLI."""
