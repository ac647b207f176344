"""One module per backend protocol, each behind the interface in adapters.base."""
