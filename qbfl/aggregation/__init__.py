"""Byzantine-robust aggregation rules behind a registry (FedAvg, Trimmed-Mean, Median, Krum, Alg. 2)."""
