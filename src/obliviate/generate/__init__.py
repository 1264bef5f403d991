"""Generation backends behind one ``Generator`` interface (see ``base.Generator``)."""

from .base import GenerationParams, Generator, as_messages

__all__ = ["GenerationParams", "Generator", "as_messages"]
