"""One QBFL node process: gRPC servicer, peer clients, round driver and the qbfl-node CLI."""
