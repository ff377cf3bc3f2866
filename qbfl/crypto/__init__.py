"""Cryptography: ML-DSA signatures, simulated QKD links and key pools, quantum digital signatures."""
