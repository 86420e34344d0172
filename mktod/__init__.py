"""mktod: MK-TOD retrieval-generation alignment for end-to-end task-oriented dialogue."""

__version__ = "0.1.0"
