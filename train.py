"""Train a zoo (or any timm) model: `python train.py [experiment=<group>/<name>] [key=value ...]`."""
import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig):
    from zoo.train import run  # imported here so `--help` and config errors come back fast
    metrics = run(cfg)
    return metrics.get('val/acc')  # the value Hydra sweepers optimize


if __name__ == "__main__":
    main()
