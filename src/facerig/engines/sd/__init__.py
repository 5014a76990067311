"""Shared Stable-Diffusion substrate of the SD-based engines (docs/rigface.md)."""
