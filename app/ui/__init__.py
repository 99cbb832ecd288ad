"""The dashboard at /ui: HTML pages, static files, and the JSON summaries behind its charts."""
