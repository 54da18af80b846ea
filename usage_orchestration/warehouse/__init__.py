"""The tables this project owns (SQLAlchemy Core): schema, partition replace."""
