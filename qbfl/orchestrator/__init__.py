"""Launching networks: in-process simulation, local processes and Docker, and the qbfl-orchestrator CLI."""
