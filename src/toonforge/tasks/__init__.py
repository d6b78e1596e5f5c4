"""Task records, their lifecycle, persistence (SQLAlchemy 2 + Alembic) and the claim."""
