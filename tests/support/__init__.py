"""Reusable test parts: real HTTP servers on loopback and wire-compatible fake model providers."""
