"""Search tools: image search and text search over local indexes or the web."""
