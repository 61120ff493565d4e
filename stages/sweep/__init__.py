"""`python cli.py sweep SWEEP_FILE`: variants x seeds from one teacher cache, compared on held-out pairs."""
from stages.sweep.command import run_sweep

__all__ = ["run_sweep"]
