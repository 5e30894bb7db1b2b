"""Constructs that build the gateway's resources; the stack only composes them."""
