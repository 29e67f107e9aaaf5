"""Pretrain (or find in the cache) the tiny synthetic CLIP; prints the checkpoint path.

    python scripts/pretrain_synthetic.py                              # the demo preset
    python scripts/pretrain_synthetic.py experiment=synthetic_test    # the test preset
    python scripts/pretrain_synthetic.py model.pretrain.epochs=10     # any pretraining change gets its own cache entry

`clipcl` does this by itself when `model=synthetic` finds no cached checkpoint.
"""

from clipcl_runner.cli import pretrain_main

if __name__ == "__main__":
    pretrain_main()
