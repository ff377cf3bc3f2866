"""QBFL: quantum-enhanced blockchain federated learning via quantum Byzantine agreement."""

__version__ = "0.1.0"
