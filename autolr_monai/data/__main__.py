"""``python -m autolr_monai.data --output_dir DIR [--n_cases 20 --seed 0 --spacing "[1.5,1.5,2.5]"]``: write a
synthetic phantom dataset and its datalist."""

import logging

import fire

from autolr_monai.data.phantom import write_phantom_dataset

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    fire.Fire(write_phantom_dataset)
