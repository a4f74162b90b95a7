"""handrail: data migrations as runbooks in code, with an operator's habits enforced."""

__version__ = "0.1.0"
