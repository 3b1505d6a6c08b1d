"""Routing intents to agents: the Router, its registry, events and remote agents."""
