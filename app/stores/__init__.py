"""Stores behind protocols: live state of running tasks (in-process or Redis) and tracking history."""
