"""Federated learning: data, partitions, MPO models, local training, DP and attacks."""
