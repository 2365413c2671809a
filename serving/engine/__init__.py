"""The embedded CPU inference engine (torch, transformers). Import its modules directly; this package
imports nothing so that torch-free code can import ``serving.engine.reasoning``."""
