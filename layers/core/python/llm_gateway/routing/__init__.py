"""Routing: the router step (`step.route_step`), candidate models and complexity routing."""
