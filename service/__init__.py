"""The FastAPI dialogue service (filled by the service issue); it imports mktod and adds no ML logic."""
