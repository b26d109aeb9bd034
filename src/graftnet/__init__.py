"""graftnet: train deep networks and reuse what they learned."""
__version__ = "0.1.0"
