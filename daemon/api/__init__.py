"""The gRPC layer: servicers that translate protobuf to the Service façade and back.

Nothing here decides anything about inference, models or devices; see
``server.build_server`` for how the pieces are put on the listeners.
"""
