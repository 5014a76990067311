"""Training: typed configs and recipes (config), losses, and the accelerate-based Trainer (trainer).

Submodules are imported on use (accelerate and diffusers are optional extras).
"""
