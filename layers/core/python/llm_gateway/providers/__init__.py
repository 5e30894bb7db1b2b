"""Providers: one module each (request mapping, call, response mapping, typed errors), a registry."""
