"""The state dict inside the wrappers that official, timm and training checkpoint files put around it."""
from typing import Dict

__all__ = ['unwrap_state_dict']


def unwrap_state_dict(checkpoint: Dict, ema: bool = False) -> Dict:
    """{name: value} from `{'state_dict': ...}`, `{'model': ...}` or their EMA keys (preferred with `ema`), or the
    dict itself; without DataParallel's `module.` and torch.compile's `_orig_mod.` name prefixes."""
    keys = ('state_dict', 'model', 'state_dict_ema', 'model_ema')
    for key in (keys[2:] + keys[:2]) if ema else keys:
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    return {k.removeprefix('module.').removeprefix('_orig_mod.'): v for k, v in checkpoint.items()}
