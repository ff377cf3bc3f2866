"""Generated from proto/qbfl/v1 by scripts/gen-proto.sh."""
