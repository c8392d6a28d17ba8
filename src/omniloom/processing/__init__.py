"""Deterministic, pure preprocessing: tiling, token accounting, chat templates and prompt building.

Nothing here runs a model; every function gives the same output for the same input.
"""
