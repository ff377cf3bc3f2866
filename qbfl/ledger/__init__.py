"""The Blake3-chained ledger: canonical encoding, blocks, genesis and the SQLite store."""
