"""Stage 2 building blocks: feature bank, identity batch sampler, learning-rate schedule, checkpoints."""
