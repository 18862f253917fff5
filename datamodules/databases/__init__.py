"""The real databases: release layouts, release checks, per-clip preparation, and one DataModule per
database (``per_database.py``) over ``ReleaseDataModule`` (``datamodule.py``)."""
