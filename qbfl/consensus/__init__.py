"""Consensus: committees (Alg. 1), quantum Byzantine agreement, stakes and the round state machine (Alg. 3)."""
