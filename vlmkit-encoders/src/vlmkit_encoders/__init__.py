"""Vision encoders for vlmkit. Each is registered as a ``vlmkit.encoders`` entry point."""
