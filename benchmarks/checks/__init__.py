"""Checks that a change kept behaviour: seeded images and greedy tokens before and after."""
