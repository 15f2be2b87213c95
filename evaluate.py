"""Measure the quality of exported visualizers (docs/design.md §7) and write metrics.json.

python evaluate.py content_path=/data/run                      # visualize/DVI
python evaluate.py content_path=/data/run "vis=[DVI,TimeVis]"  # side by side; or vis='DVI,TimeVis'
python evaluate.py content_path=/data/run output_dir=/elsewhere  # exports written with output_dir=

Exits with status 2 and a one-line message when a setting, the run folder or its exports are
unusable (``debug=true``: the traceback instead). The command is :func:`ttvis.cli.evaluate`,
also installed as the console script ``ttvis-evaluate``.
"""

from ttvis.cli import evaluate

if __name__ == "__main__":
    evaluate()
