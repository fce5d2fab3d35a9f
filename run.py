"""Entry point: ``python run.py [group=option ...]``; ``-m`` sweeps. See README.md."""

import hydra
from omegaconf import DictConfig

from tasks import run


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return run(cfg)


if __name__ == "__main__":
    main()
