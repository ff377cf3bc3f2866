"""The task publisher: task, genesis block and roster, and the qbfl-publisher CLI."""
