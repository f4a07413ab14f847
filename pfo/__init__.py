"""PFO: Probability Flow Optimization for binary-feedback LLM alignment."""

__version__ = "0.1.0"
