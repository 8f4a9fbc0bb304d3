"""Generated protobuf stubs (scripts/gen_protos)."""
