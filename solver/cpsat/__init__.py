"""The CP-SAT planner: per-class models over pooled capacity, realised by list scheduling."""

from solver.cpsat.run import CpsatOptions, plan_cpsat

__all__ = ["CpsatOptions", "plan_cpsat"]
