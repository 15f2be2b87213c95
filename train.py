"""Train a time-travelling visualizer on one training run and export it.

python train.py                                    # the bundled demo run, DVI
python train.py method=dvi content_path=/data/run
python train.py -m content_path=/data/run method.lambda1=0.5,1,2

The command is :func:`ttvis.cli.train`, also installed as the console script ``ttvis-train``.
"""

from ttvis.cli import train

if __name__ == "__main__":
    train()
