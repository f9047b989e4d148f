"""Evaluate a checkpoint or a pretrained timm model: `python evaluate.py ckpt=<file.ckpt> | model.name=<name>`."""
import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="configs", config_name="evaluate")
def main(cfg: DictConfig):
    from zoo.evaluate import run
    return run(cfg)['top1']


if __name__ == "__main__":
    main()
