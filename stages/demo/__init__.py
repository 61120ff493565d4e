"""`python cli.py demo`: the pipeline end to end on synthetic faces (`command`), its preset and its report."""
from stages.demo.command import STUDENTS, run_demo

__all__ = ["STUDENTS", "run_demo"]
