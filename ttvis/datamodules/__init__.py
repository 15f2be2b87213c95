"""LightningDataModules that build complexes and stream their edges."""

from ttvis.datamodules.dvi import DVIDataModule
from ttvis.datamodules.edges import EdgeStream

__all__ = ["DVIDataModule", "EdgeStream"]
