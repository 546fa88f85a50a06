"""Autoencoders, their losses' frozen networks, and the one loader of final weights."""

from medlatent.models.registry import load_model

__all__ = ["load_model"]
