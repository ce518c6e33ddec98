"""Analytics: risk models, execution quality, performance (pure NumPy/Polars)."""
