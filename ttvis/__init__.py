"""ttvis: time-travelling visualizers (DVI, TimeVis) for deep-learning training runs."""

from ttvis.resolvers import register_resolvers

register_resolvers()

__version__ = "0.1.0"
