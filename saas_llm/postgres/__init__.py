"""PostgreSQL backend with client-side deadlines (see base.py)."""
