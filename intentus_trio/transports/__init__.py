"""Transports: the Transport protocol and its implementations."""
