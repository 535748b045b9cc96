"""The embedded offline world: factbook countries, flag images, pages and questions."""
