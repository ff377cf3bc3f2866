"""Generated gRPC stubs (scripts/gen-proto.sh); never edit by hand."""
