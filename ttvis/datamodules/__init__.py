"""LightningDataModules that build complexes and stream their edges."""

from ttvis.datamodules.dvi import DVIDataModule
from ttvis.datamodules.edges import EdgeDataModule, EdgeStream
from ttvis.datamodules.timevis import TimeVisDataModule

__all__ = ["DVIDataModule", "EdgeDataModule", "EdgeStream", "TimeVisDataModule"]
