"""The lens: kinds (one module each), the tiled pass, the engine, corpus windows and curves,
the tuned-lens format and lens fitting. Nothing here knows about manifests."""
