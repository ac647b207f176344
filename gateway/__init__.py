"""turnout: a gRPC model-routing gateway for large language models."""

__version__ = "0.1.0"
