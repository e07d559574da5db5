"""Particle systems: trajectory readers, the SPH ground truth, the learned simulator task and its CLI."""
