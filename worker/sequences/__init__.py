"""Sequences: steps, scheduling, sending claimed steps, halting on replies."""
