"""The gRPC edge shared by the node and the publisher: conversions, status codes, channel settings."""
