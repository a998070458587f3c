"""Rotation: candidates, staging, the swap, the live check, directory intake, auto-rotation."""
