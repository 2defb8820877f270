"""The site: figure payloads, pages, assets, and the atomic swap into place (never torch)."""
