"""One module per app tab; each exposes ``build(registry)`` and renders into the current tab."""
