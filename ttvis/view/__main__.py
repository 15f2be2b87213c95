"""``python -m ttvis.view content_path=/data/run ["vis=[DVI,TimeVis]"] [serve=true]``: write the
interactive viewer of a run's exports and open it (:func:`ttvis.cli.view`, also the
``ttvis-view`` console script). Settings: ``conf/view.yaml``."""

from ttvis.cli import view

if __name__ == "__main__":
    view()
