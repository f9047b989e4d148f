"""SeqNet: the residual backbone of the S4 / SGConv papers, and the Long Range Arena classifiers built on it.

One isotropic stack serves both layers (`zoo.models.s4d.S4D`, `zoo.models.sgconv.SGConv`): an encoder (token
embedding, or a linear map of pixel / feature channels), `depth` residual blocks (layer, BatchNorm or LayerNorm before
or after it, dropout), a final norm for pre-norm stacks, pooling (mean over the valid positions, or the last valid
one) and a linear decoder. The retrieval task reads two documents, pools each, and classifies [a, b, a - b, a * b]
with an MLP, as the official s4 `retrieval` decoder does.

Registered models (`s4d_lra_*`, `sgconv_lra_*`) use the published LRA sizes: the S4D paper's v3 configs of
state-spaces/s4 (`configs/experiment/lra/old/v3-s4-*.yaml`, run in diagonal mode) and SGConv's `preview` branch
(`configs/experiment/lra/gconv-lra-*.yaml`). Official LRA runs load through `checkpoint_filter_fn` (with
`lra_model_args(config)` for the settings their weights do not show; docs/lra.md).

Inputs, as each model's `pretrained_cfg['description']` says:
  * token tasks: int64 ids (B, L) (retrieval: (B, 2, L)) with 0 <= id < `model.vocab_size`, and optional
    `lengths` (B,) (retrieval: (B, 2)) counting the valid tokens of right-padded sequences;
  * pixel tasks: float (B, C, H, W) images, read in raster order, or (B, L, C) sequences.
L may not exceed `model.seq_len` (the kernel length the layers were built for). Token ids and `lengths` are checked
on CPU inputs; on a GPU that check would stall every forward, so the DataModules check their data instead. `lengths`
select the positions that are pooled; as in the official LRA pipelines, padded positions still run through the blocks (with bidirectional
kernels they reach the valid positions; BatchNorm statistics include them).
"""
import re
from typing import Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import (
    checkpoint_seq, generate_default_cfgs, load_pretrained, register_model, resolve_pretrained_cfg)

from kernels import exporting

from ._pretrained import pretrained_weights
from ._state_dict import unwrap_state_dict
from .layers import check_input_dtype, check_kwargs, check_model_args, check_range
from .s4d import S4D, S4D_UNSUPPORTED
from .sgconv import SGCONV_UNSUPPORTED, SGConv

__all__ = ['SeqNet', 'SeqBlock', 'checkpoint_filter_fn', 'lra_model_args']

SEQUENCE_LAYERS = {'s4d': S4D, 'sgconv': SGConv}
# Official options these layers refuse themselves, with a message that says they are not supported.
UNSUPPORTED_LAYER_OPTIONS = {'s4d': S4D_UNSUPPORTED, 'sgconv': SGCONV_UNSUPPORTED}


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the feature axis of (B, H, L) sequences."""

    def forward(self, x):
        return F.layer_norm(x.transpose(1, 2), self.normalized_shape, self.weight, self.bias, self.eps).transpose(1, 2)


def _norm_layer(norm: str, dim: int) -> nn.Module:
    if norm == 'batch':
        return nn.BatchNorm1d(dim)
    if norm == 'layer':
        return ChannelLayerNorm(dim)
    raise ValueError(f"norm must be 'batch' or 'layer', got {norm!r}")


class SeqBlock(nn.Module):
    """Residual block on (B, H, L): x + dropout(layer(norm(x))) (pre-norm) or norm(x + dropout(layer(x)))."""

    def __init__(self, layer: nn.Module, dim: int, norm: str = 'batch', prenorm: bool = True, dropout: float = 0.0,
                 tie_dropout: bool = True):
        super().__init__()
        self.layer = layer
        self.norm = _norm_layer(norm, dim)
        self.prenorm = prenorm
        dropout_cls = nn.Dropout1d if tie_dropout else nn.Dropout
        self.drop = dropout_cls(dropout) if dropout > 0.0 else nn.Identity()

    def forward(self, x):
        if self.prenorm:
            return x + self.drop(self.layer(self.norm(x)))
        return self.norm(x + self.drop(self.layer(x)))


class SeqNet(nn.Module):
    """Sequence classifier: encoder, residual long-convolution blocks, pooling, decoder.

    Args:
        layer: 's4d' or 'sgconv'.
        num_classes: classifier outputs (0: no classifier, the head returns pooled features).
        vocab_size: token vocabulary (token tasks); exclusive with `in_chans`.
        in_chans: channels per position (pixel / feature tasks).
        seq_len: longest sequence accepted; SGConv builds its scales for it.
        num_docs: 1, or 2 for the two-document retrieval head.
        embed_dim, depth: width H and number of blocks.
        norm, prenorm: 'batch' or 'layer', before (pre) or after (post) the residual layer.
        dropout, tie_dropout: dropout in each layer and on each residual branch; tied = whole features dropped for
            the full sequence.
        global_pool: 'avg' (mean over valid positions) or 'last' (last valid position).
        drop_rate: dropout before the classifier (timm's convention).
        drop_path_rate: accepted for timm's train.py; these blocks have no stochastic depth, so it must be 0.
        layer_kwargs: arguments for the layer (S4D: init, disc, d_state, lr, ...; SGConv: kernel_dim, mode, ...).
        kernel_backend: 'auto' | 'torch' | 'triton', for `kernels.longconv`.
    """

    def __init__(
            self,
            layer: str = 's4d',
            num_classes: int = 10,
            vocab_size: Optional[int] = None,
            in_chans: Optional[int] = None,
            seq_len: int = 1024,
            num_docs: int = 1,
            embed_dim: int = 256,
            depth: int = 6,
            norm: str = 'batch',
            prenorm: bool = True,
            dropout: float = 0.0,
            tie_dropout: bool = True,
            global_pool: str = 'avg',
            layer_kwargs: Optional[dict] = None,
            kernel_backend: str = 'auto',
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if layer not in SEQUENCE_LAYERS:
            raise ValueError(f"layer must be one of {sorted(SEQUENCE_LAYERS)}, got {layer!r}")
        if (vocab_size is None) == (in_chans is None):
            raise ValueError("give exactly one of vocab_size (token inputs) and in_chans (pixel / feature inputs)")
        if num_docs not in (1, 2):
            raise ValueError(f"num_docs must be 1 or 2 (retrieval), got {num_docs}")
        check_model_args('SeqNet', in_chans=in_chans, num_classes=num_classes, drop_rate=drop_rate,
                         drop_path_rate=drop_path_rate, stochastic_depth=False)
        for name, value, low in (('vocab_size', vocab_size, 1), ('seq_len', seq_len, 1), ('embed_dim', embed_dim, 1),
                                 ('depth', depth, 0)):
            if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
                raise ValueError(f"SeqNet: {name} must be an integer >= {low}, got {value!r}")
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            raise ValueError(f"SeqNet: dropout must be a number in [0, 1), got {dropout!r}")
        check_kwargs('SeqNet', [k for k in layer_kwargs or {} if k not in UNSUPPORTED_LAYER_OPTIONS[layer]],
                     SEQUENCE_LAYERS[layer], exclude=('d_model',), what='layer_kwargs key',
                     where=f' (for layer={layer!r})')
        self._check_pool(global_pool)
        self.num_classes = num_classes
        self.vocab_size, self.in_chans, self.seq_len, self.num_docs = vocab_size, in_chans, seq_len, num_docs
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.grad_checkpointing = False

        self.encoder = nn.Embedding(vocab_size, embed_dim) if vocab_size else nn.Linear(in_chans, embed_dim)
        layer_kw = dict(dropout=dropout, tie_dropout=tie_dropout, transposed=True, kernel_backend=kernel_backend)
        if layer == 'sgconv':
            layer_kw['l_max'] = seq_len
        layer_kw.update(layer_kwargs or {})
        self.blocks = nn.Sequential(*[
            SeqBlock(SEQUENCE_LAYERS[layer](embed_dim, **layer_kw), embed_dim, norm=norm, prenorm=prenorm,
                     dropout=dropout, tie_dropout=tie_dropout)
            for _ in range(depth)])
        self.norm = _norm_layer(norm, embed_dim) if prenorm else nn.Identity()
        # Retrieval: [a, b, a - b, a * b] -> Linear(4H, H) -> GELU, then the classifier
        self.pre_logits = nn.Sequential(nn.Linear(4 * embed_dim, embed_dim), nn.GELU()) if num_docs == 2 \
            else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    @staticmethod
    def _check_pool(global_pool):
        if global_pool not in ('avg', 'last'):
            raise ValueError(f"global_pool must be 'avg' or 'last', got {global_pool!r}")

    @torch.jit.ignore
    def no_weight_decay(self):
        """Names of the parameters that carry zero weight decay in their `_optim` hint (SSM dt, A, B)."""
        return {name for name, p in self.named_parameters() if getattr(p, '_optim', {}).get('weight_decay') == 0.0}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        return dict(stem=r'^encoder', blocks=[(r'^blocks\.(\d+)', None), (r'^norm', (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        check_model_args('SeqNet', num_classes=num_classes)
        self.num_classes = num_classes
        if global_pool is not None:
            self._check_pool(global_pool)
            self.global_pool = global_pool
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Checked input -> (B * num_docs, H, L)."""
        if self.vocab_size is not None:
            shape = '(B, 2, L)' if self.num_docs == 2 else '(B, L)'
            if x.dtype not in (torch.int64, torch.int32) or x.dim() != (3 if self.num_docs == 2 else 2) or \
                    (self.num_docs == 2 and x.shape[1] != 2):
                raise ValueError(f"expected integer token ids of shape {shape} (int64 or int32), got {x.dtype} "
                                 f"{tuple(x.shape)}")
            # Value checks: not on a GPU (reading values back would stall every forward; the DataModules check their
            # data) and not in an exported graph (it cannot branch on data).
            if not x.is_cuda and not exporting():
                check_range(x, 0, self.vocab_size - 1, 'token ids', f'[0, {self.vocab_size}) (vocab_size)')
            x = x.flatten(0, 1) if self.num_docs == 2 else x
        else:
            if x.dim() == 4:  # (B, C, H, W) image read in raster order
                if x.shape[1] != self.in_chans:
                    raise ValueError(f"expected {self.in_chans} input channels, got image of shape {tuple(x.shape)}")
                x = x.flatten(2).transpose(1, 2)
            elif x.dim() != 3 or x.shape[-1] != self.in_chans:
                raise ValueError(f"expected (B, C={self.in_chans}, H, W) images or (B, L, C={self.in_chans}) "
                                 f"sequences, got shape {tuple(x.shape)}")
            check_input_dtype(x, self.encoder.weight, 'SeqNet')
        if x.shape[1] < 1:
            raise ValueError(f"the sequence length L must be >= 1, got an empty sequence (input shape "
                             f"{tuple(x.shape)})")
        if x.shape[1] > self.seq_len:
            raise ValueError(f"sequence length {x.shape[1]} exceeds the model's seq_len {self.seq_len}")
        return self.encoder(x).transpose(1, 2)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) / (B, 2, L) ids or (B, C, H, W) / (B, L, C) values -> (B, L, H) features ((B, 2, L, H) for pairs)."""
        batch = x.shape[0]
        x = self._embed(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        x = self.norm(x).transpose(1, 2)
        return x.reshape(batch, self.num_docs, *x.shape[1:]) if self.num_docs == 2 else x

    def _pool(self, x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
        """(..., L, H) -> (..., H) over the first `lengths` positions (all if None)."""
        L = x.shape[-2]
        if lengths is None:
            return x.mean(-2) if self.global_pool == 'avg' else x[..., -1, :]
        lengths = torch.as_tensor(lengths, device=x.device)
        if lengths.shape != x.shape[:-2]:
            raise ValueError(f"lengths must have shape {tuple(x.shape[:-2])}, got {tuple(lengths.shape)}")
        if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
            raise ValueError(f"lengths must be integers (int64) in [1, {L}], got {lengths.dtype}")
        if not lengths.is_cuda and not exporting():
            check_range(lengths, 1, L, 'lengths')
        if self.global_pool == 'avg':
            valid = torch.arange(L, device=x.device) < lengths.unsqueeze(-1)  # (..., L)
            return (x * valid.unsqueeze(-1).to(x.dtype)).sum(-2) / lengths.unsqueeze(-1).to(x.dtype)
        index = (lengths - 1).view(*lengths.shape, 1, 1).expand(*lengths.shape, 1, x.shape[-1])
        return x.gather(-2, index).squeeze(-2)

    def forward_head(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None, pre_logits: bool = False):
        x = self._pool(x, lengths)
        if self.num_docs == 2:
            a, b = x.unbind(1)
            x = torch.cat((a, b, a - b, a * b), dim=-1)
        x = self.head_drop(self.pre_logits(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x), lengths)


# ----------------------------------------------------------------------------------------------------------------
# Official LRA checkpoints -> this model

# Official S4 block keys without an equivalent here -> the option that made them.
_S4_REFUSED_KEYS = (
    (r'^input_gate\.|^output_gate\.', 'gate (GSS gating)'), (r'^input_linear\.', 'bottleneck'),
    (r'weight_[gv]$', 'weight_norm'), (r'^layer\.kernel\.P$', "mode='dplr' (an S4 kernel, not S4D's diagonal one)"),
    (r'^layer\.kernel\.(log_dt|log_w_real|w_imag|inv_w_real)$', 'the state-spaces/s4 v3 layout (convert it with '
     'its checkpoints/convert_v3_to_v4.py first)'),
)


def _official_s4_layer(items: dict, layer: S4D, where: str) -> dict:
    """One official S4 block (diagonal mode) in this layer's layout: A_imag sign, D / B / C / projection shapes."""
    kernel = layer.kernel
    out = {}
    for key, value in items.items():
        for pattern, option in _S4_REFUSED_KEYS:
            if re.search(pattern, key):
                raise ValueError(f"SeqNet: the checkpoint's {where}{key} comes from the official option {option}, "
                                 f"which S4D does not have")
        if key == 'layer.D':
            out['D'] = value[0] if layer.D.dim() == 1 and value.shape[0] == 1 else value
        elif key == 'layer.kernel.inv_dt':
            if kernel.dt_tie and value.shape[-1] != 1:
                raise ValueError(f"SeqNet: the checkpoint's dt is untied ({where}layer.kernel.inv_dt "
                                 f"{tuple(value.shape)}): build the model with layer_kwargs=dict(dt_tie=False)")
            out[f'kernel.{kernel.dt_name}'] = value[:, 0] if kernel.dt_tie else value
        elif key == 'layer.kernel.A_real':
            out['kernel.log_A_real'] = value  # the official default real_transform='exp': -exp(A_real)
        elif key == 'layer.kernel.A_imag':
            out['kernel.A_imag'] = -value  # officially A = -exp(A_real) - i A_imag; here + i A_imag
        elif key == 'layer.kernel.B':
            out['kernel.B'] = value[0]
        elif key == 'layer.kernel.C':
            out['kernel.C'] = value[0] if layer.kernel.C.dim() == 3 and value.shape[0] == 1 else value
        elif key.startswith('output_linear.'):
            if value.dim() == 2:
                value = value.unsqueeze(-1)  # Linear -> 1x1 conv
            own = 'output_linear.' + key.split('.')[-1]
            out[key if isinstance(layer.output_linear, nn.Sequential) else own] = value
        else:
            raise ValueError(f"SeqNet: the checkpoint's {where}{key} has no place in an S4D layer (an official "
                             f"option this layer does not have)")
    if 'kernel.B' in out and kernel.B is None:  # B folded into C, as the minimal layer keeps it
        B = torch.view_as_complex(out.pop('kernel.B').contiguous()).repeat(kernel.d_model // kernel.n_ssm, 1)
        C = torch.view_as_complex(out['kernel.C'].contiguous())
        out['kernel.C'] = torch.view_as_real(C * B)
    return out


def _official_sgconv_layer(items: dict, where: str) -> dict:
    for key in items:
        if key.startswith('norm.'):
            raise ValueError(f"SeqNet: the checkpoint's {where}{key} comes from the official option ln=True, which "
                             f"SGConv does not have")
    return items  # the official GConv's names are this layer's (SGConv converts the norm buffers on load)


def checkpoint_filter_fn(state_dict: dict, model: 'SeqNet') -> dict:
    """Map an official Long Range Arena checkpoint onto `model`: the state dict of a state-spaces/s4 training run
    (`python -m checkpoints.convert_pl_to_pt run.ckpt` writes it; also as `{'state_dict': ...}`), with S4 blocks in
    diagonal mode (S4D) for `s4d_lra_*`, or with SGConv's pipeline `GConv` layers (its `preview` branch) for
    `sgconv_lra_*`. This project's own layout passes unchanged.

    Converted: names (`model.layers.{i}` -> `blocks.{i}`, `encoder.0` -> `encoder`, `decoder.0.output_transform` ->
    `head`, the retrieval decoder's MLP -> `pre_logits` and `head`), the sign of `A_imag`, the shapes of D, B, C and
    the output projection, B folded into C for a model without its own B (`learn_B=False`), an untied dt into
    `dt_tie=False`. `inv_dt` is read in the model's `dt_transform`: the current official layer config uses
    'softplus', the S4D paper's (v3) configs 'exp' (the registered models' default); `lra_model_args(config)` reads
    that and the other settings that leave no trace in the weights (discretization, pooling) from the run's config.
    Refused with the option named: GSS gates and bottlenecks, weight norm, S4 (DPLR) kernels, SGConv's `ln`, a
    layer of the other family, another vocabulary or input width, and keys without a place here.
    """
    state_dict = unwrap_state_dict(state_dict)
    if not any(k.startswith('model.layers.') for k in state_dict):
        return state_dict  # this project's layout
    family = type(model.blocks[0].layer) if len(model.blocks) else S4D
    ckpt_family = SGConv if any('.layer.kernel_list.' in k for k in state_dict) else S4D
    if len(model.blocks) and ckpt_family is not family:
        raise ValueError(f"SeqNet: the checkpoint's layers are {ckpt_family.__name__}, the model's "
                         f"{family.__name__}: build {'sgconv' if ckpt_family is SGConv else 's4d'}_lra_* instead")
    out, layers = {}, {}
    for key, value in state_dict.items():
        match = re.match(r'model\.layers\.(\d+)\.(.*)$', key)
        if match:
            i, rest = int(match.group(1)), match.group(2)
            if rest.startswith('norm.norm.'):
                out[f'blocks.{i}.norm.{rest[len("norm.norm."):]}'] = value
            elif rest.startswith('layer.'):
                layers.setdefault(i, {})[rest[len('layer.'):]] = value
            else:
                raise ValueError(f"SeqNet: the checkpoint's {key} has no place here (a residual or pooling option "
                                 f"of the official backbone this model does not have)")
        elif key.startswith('model.norm.norm.'):
            out['norm.' + key[len('model.norm.norm.'):]] = value
        elif key.startswith('encoder.0.'):
            out['encoder.' + key[len('encoder.0.'):]] = value
        elif key.startswith('decoder.0.output_transform.'):
            out['head.' + key[len('decoder.0.output_transform.'):]] = value
        elif key.startswith('decoder.0.retrieval.classifier.'):
            index, leaf = key[len('decoder.0.retrieval.classifier.'):].split('.', 1)
            if index not in ('0', '2'):
                raise ValueError("SeqNet: the checkpoint's retrieval decoder has nli=False (a 3-layer MLP on [a, b]); "
                                 "this model's pair head is the nli one, [a, b, a - b, a * b]")
            out[('pre_logits.0.' if index == '0' else 'head.') + leaf] = value
        else:
            raise ValueError(f"SeqNet: the checkpoint's {key} has no place in this model (another encoder, decoder "
                             f"or backbone option)")
    for i, items in sorted(layers.items()):
        if i >= len(model.blocks):
            raise ValueError(f"SeqNet: the checkpoint has more layers than the model's depth={len(model.blocks)}")
        where = f'model.layers.{i}.layer.'
        mapped = _official_s4_layer(items, model.blocks[i].layer, where) if family is S4D \
            else _official_sgconv_layer(items, where)
        out.update({f'blocks.{i}.layer.{k}': v for k, v in mapped.items()})
    weight = out.get('encoder.weight')
    if weight is not None:
        if model.vocab_size is not None and weight.shape[0] != model.vocab_size:
            raise ValueError(f"SeqNet: the checkpoint's embedding has {weight.shape[0]} tokens, the model "
                             f"vocab_size={model.vocab_size}: build it with vocab_size={weight.shape[0]}")
        if model.in_chans is not None and weight.shape[-1] != model.in_chans:
            raise ValueError(f"SeqNet: the checkpoint's encoder takes {weight.shape[-1]} input channels, the model "
                             f"in_chans={model.in_chans}")
    return out


def lra_model_args(config: Mapping) -> dict:
    """Keyword arguments for `timm.create_model('s4d_lra_<task>' or 'sgconv_lra_<task>', **kwargs)` that rebuild the
    model of an official LRA run from its resolved Hydra config (the run's `.hydra/config.yaml`, e.g.
    `OmegaConf.to_container(OmegaConf.load(path), resolve=True)`), with the settings that leave no trace in its
    weights: dt transform, discretization, pooling, norms, dropout. `config['dataset']` may give `n_tokens`,
    `d_input` and `d_output` (the dataset object's sizes; otherwise the registered model's stay).
    Raises ValueError for official settings without an equivalent (a non-diagonal kernel, the backbone's own
    `bidirectional`, pooling other than 'pool' / 'last', ...) and TypeError from the layer for its unsupported options.
    """
    model = dict(config['model'])
    layer = dict(model.get('layer') or {})
    name = layer.pop('_name_', 's4')
    refused = []
    if model.get('bidirectional'):
        refused.append('model.bidirectional (a reversed copy of every layer)')
    pool = model.get('pool') or {}
    if model.get('n_repeat', 1) != 1 or pool.get('stride', 1) != 1 or pool.get('expand') not in (None, 1):
        refused.append('model.n_repeat / model.pool (pooling stages)')
    residual = model.get('residual')
    residual = residual.get('_name_') if isinstance(residual, Mapping) else residual
    if residual != 'R':
        refused.append(f"model.residual={residual!r} (the blocks here add the plain residual, 'R')")
    norm = model.get('norm', 'layer')
    norm = norm.get('_name_') if isinstance(norm, Mapping) else norm
    if norm not in ('batch', 'layer'):
        refused.append(f'model.norm={norm!r}')
    decoder = config.get('decoder') or {}
    decoder = {'_name_': decoder} if isinstance(decoder, str) else dict(decoder)
    mode = decoder.get('mode', 'last')
    if mode not in ('pool', 'last'):
        refused.append(f'decoder.mode={mode!r}')
    if decoder.get('_name_') == 'retrieval' and (not decoder.get('nli', True) or
                                                 decoder.get('activation', 'relu') != 'gelu'):
        refused.append('the retrieval decoder other than nli=True with GELU')
    layer_kwargs = {}
    if name == 's4':
        if layer.pop('mode', 'nplr') not in ('diag', 's4d'):
            refused.append("model.layer.mode other than 'diag' (S4's DPLR kernel: not S4D)")
        init = layer.pop('init', None) or layer.pop('measure', None) or 'legs'
        layer_kwargs = dict(init=init, learn_B=True, disc=layer.pop('disc', 'zoh'),
                            dt_transform=layer.pop('dt_transform', 'exp'), n_ssm=layer.pop('n_ssm', None),
                            final_act=layer.pop('final_act', 'glu'))
        keep = ('d_state', 'dt_min', 'dt_max', 'dt_tie', 'dt_fast', 'bandlimit', 'bidirectional', 'channels', 'lr',
                'activation', 'drop_kernel')
    elif name == 'gconv':
        postact = layer.pop('postact', None)
        layer_kwargs = dict(postact=postact if postact is not None else layer.pop('final_act', None))
        keep = ('kernel_dim', 'mode', 'decay_min', 'decay_max', 'init_scale', 'n_scales', 'lr', 'bidirectional',
                'channels', 'activation', 'linear', 'shift')
    else:
        raise ValueError(f"lra_model_args: layer {name!r} is neither the official S4 block nor SGConv's GConv")
    layer_kwargs.update({k: layer.pop(k) for k in keep if k in layer})
    for k in ('dropout', 'transposed', 'tie_dropout', 'l_max', 'verbose', 'wd', 'postact', 'final_act',
              'initializer', 'd_model', 'backend'):
        layer.pop(k, None)
    # Official settings at their defaults, which are this layer's behaviour (anything else the layer refuses).
    for k, default in (('layer', 'fftconv'), ('rank', 1), ('deterministic', False), ('measure', None),
                       ('real_transform', 'exp'), ('imag_transform', 'none'), ('gate_act', 'id')):
        if layer.get(k, default) == default:
            layer.pop(k, None)
    if layer.get('layer', 'fftconv') != 'fftconv':
        refused.append(f"model.layer.layer={layer.pop('layer')!r}")
    layer_kwargs.update({k: v for k, v in layer.items() if v not in (None, False)})  # the layer refuses the rest
    if refused:
        raise ValueError('lra_model_args: official settings without an equivalent here: ' + '; '.join(refused))
    kwargs = dict(embed_dim=model['d_model'], depth=model.get('n_layers', 1), prenorm=model.get('prenorm', True),
                  norm=norm, dropout=model.get('dropout', 0.0), tie_dropout=model.get('tie_dropout', False),
                  global_pool='avg' if mode == 'pool' else 'last', layer_kwargs=layer_kwargs)
    sizes = config.get('dataset') or {}
    for ours, theirs in (('vocab_size', 'n_tokens'), ('in_chans', 'd_input'), ('num_classes', 'd_output')):
        if sizes.get(theirs) is not None:
            kwargs[ours] = sizes[theirs]
    if decoder.get('_name_') == 'retrieval':
        kwargs['num_docs'] = 2
    return kwargs


def _create_seqnet(variant: str, pretrained: bool = False, **kwargs) -> SeqNet:
    # Not build_model_with_cfg: it derives in_chans from a (C, H, W) input_size, and token models have (L,) / (2, L).
    cfg = resolve_pretrained_cfg(
        variant, pretrained_cfg=kwargs.pop('pretrained_cfg', None),
        pretrained_cfg_overlay=kwargs.pop('pretrained_cfg_overlay', None))
    cache_dir, device, dtype = kwargs.pop('cache_dir', None), kwargs.pop('device', None), kwargs.pop('dtype', None)
    check_kwargs(variant, kwargs, SeqNet)
    kwargs.setdefault('num_classes', cfg.num_classes)
    model = SeqNet(**kwargs)
    model.pretrained_cfg = model.default_cfg = cfg.to_dict()
    with pretrained_weights(variant, pretrained, dict(pretrained_cfg=cfg.to_dict())):
        if pretrained:
            # first_conv=None: no RGB-to-in_chans weight adaptation, the encoder is an embedding or a per-channel
            # linear
            load_pretrained(model, {**model.pretrained_cfg, 'first_conv': None}, num_classes=model.num_classes,
                            filter_fn=checkpoint_filter_fn, cache_dir=cache_dir)
    return model.to(device=device, dtype=dtype) if device is not None or dtype is not None else model


def _merge(defaults: dict, kwargs: dict) -> dict:
    """Registered defaults overridden by the caller; `layer_kwargs` merged key by key."""
    layer_kwargs = {**defaults.pop('layer_kwargs', {}), **(kwargs.pop('layer_kwargs', None) or {})}
    return {**defaults, **kwargs, 'layer_kwargs': layer_kwargs}


def _token_cfg(seq_len: int, num_classes: int, num_docs: int = 1, **kwargs):
    shape = '(B, 2, L)' if num_docs == 2 else '(B, L)'
    lengths = '(B, 2)' if num_docs == 2 else '(B,)'
    return _cfg(
        input_size=(2, seq_len) if num_docs == 2 else (seq_len,), num_classes=num_classes,
        description=f"token ids {shape} int64 in [0, vocab_size), L <= {seq_len}, optional lengths {lengths}",
        **kwargs)


def _pixel_cfg(side: int, num_classes: int, mean: float, std: float, **kwargs):
    return _cfg(
        input_size=(1, side, side), num_classes=num_classes, mean=(mean,), std=(std,),
        description=f"grayscale images (B, 1, {side}, {side}) float (or (B, {side * side}, 1) sequences), "
                    "normalized with mean/std",
        **kwargs)


def _cfg(**kwargs):
    return {
        'url': '', 'pool_size': None, 'crop_pct': 1.0, 'interpolation': '', 'fixed_input_size': True,
        'mean': (0.0,), 'std': (1.0,), 'first_conv': 'encoder', 'classifier': 'head', 'license': 'apache-2.0',
        **kwargs,
    }


_S4D = dict(paper_ids='arXiv:2206.11893', origin_url='https://github.com/state-spaces/s4',
            paper_name='On the Parameterization and Initialization of Diagonal State Space Models')
_SGCONV = dict(paper_ids='arXiv:2210.09298', origin_url='https://github.com/ctlllll/SGConv',
               paper_name='What Makes Convolutional Models Great on Long Sequence Modeling?')
_CIFAR_GRAY = dict(mean=122.6 / 255.0, std=61.0 / 255.0)  # the s4 grayscale CIFAR normalization
_PATHFINDER = dict(mean=0.0, std=1.0)  # pixels in [0, 1]

default_cfgs = generate_default_cfgs({
    's4d_lra_listops': _token_cfg(2048, 10, **_S4D),
    's4d_lra_text': _token_cfg(4096, 2, **_S4D),
    's4d_lra_retrieval': _token_cfg(4000, 2, num_docs=2, **_S4D),
    's4d_lra_image': _pixel_cfg(32, 10, **_CIFAR_GRAY, **_S4D),
    's4d_lra_pathfinder': _pixel_cfg(32, 2, **_PATHFINDER, **_S4D),
    's4d_lra_pathx': _pixel_cfg(128, 2, **_PATHFINDER, **_S4D),
    'sgconv_lra_listops': _token_cfg(2048, 10, **_SGCONV),
    'sgconv_lra_text': _token_cfg(4096, 2, **_SGCONV),
    'sgconv_lra_retrieval': _token_cfg(4000, 2, num_docs=2, **_SGCONV),
    'sgconv_lra_image': _pixel_cfg(32, 10, **_CIFAR_GRAY, **_SGCONV),
    'sgconv_lra_pathfinder': _pixel_cfg(32, 2, **_PATHFINDER, **_SGCONV),
    'sgconv_lra_pathx': _pixel_cfg(128, 2, **_PATHFINDER, **_SGCONV),
})

# S4D: bidirectional kernels, GLU output, B as its own parameter; SSM lr as in the v3 configs (dt at the global lr
# for ListOps/Text/Retrieval/Image). Init S4D-Inv (the paper's best LRA average) with the v3 bilinear
# discretization; pass layer_kwargs={'init': 'legs' | 'lin', 'disc': 'zoh'} for the other published variants.
_S4D_LAYER = dict(d_state=64, bidirectional=True, init='inv', disc='bilinear', learn_B=True,
                  lr={'dt': None, 'A': 0.001, 'B': 0.001})
# SGConv: bidirectional, GLU output, kernel lr 1e-3; the layer's own dropout is untied (official transposed=False).
_SGCONV_LAYER = dict(bidirectional=True, glu=True, lr=0.001, tie_dropout=False)

# Token models: vocab_size is the official vocabulary bound (ListOps 18 + spare, IMDB char min_freq 15, AAN 98 +
# spare); the DataModule passes the real one.
_S4D_CONFIGS = {
    'listops': dict(vocab_size=20, seq_len=2048, num_classes=10, embed_dim=128, depth=8, prenorm=False),
    'text': dict(vocab_size=135, seq_len=4096, num_classes=2),
    'retrieval': dict(vocab_size=100, seq_len=4000, num_classes=2, num_docs=2),
    'image': dict(in_chans=1, seq_len=1024, num_classes=10, embed_dim=512, norm='layer', prenorm=False,
                  dropout=0.1, layer_kwargs=dict(n_ssm=2)),
    'pathfinder': dict(in_chans=1, seq_len=1024, num_classes=2, global_pool='last', layer_kwargs=dict(lr=0.001)),
    'pathx': dict(in_chans=1, seq_len=16384, num_classes=2, layer_kwargs=dict(lr=0.0005, dt_min=0.0001)),
}
_SGCONV_CONFIGS = {
    'listops': dict(vocab_size=20, seq_len=2048, num_classes=10, embed_dim=128, depth=8, prenorm=False,
                    layer_kwargs=dict(kernel_dim=1)),
    'text': dict(vocab_size=135, seq_len=4096, num_classes=2, layer_kwargs=dict(kernel_dim=2)),
    'retrieval': dict(vocab_size=100, seq_len=4000, num_classes=2, num_docs=2, layer_kwargs=dict(kernel_dim=1)),
    'image': dict(in_chans=1, seq_len=1024, num_classes=10, embed_dim=512, norm='layer', prenorm=False,
                  dropout=0.2, layer_kwargs=dict(kernel_dim=32, mode='cat_randn_learnable_fixed', decay_min=1.0,
                                                 decay_max=1.0)),
    'pathfinder': dict(in_chans=1, seq_len=1024, num_classes=2, global_pool='last', dropout=0.2,
                       layer_kwargs=dict(kernel_dim=32)),
    'pathx': dict(in_chans=1, seq_len=16384, num_classes=2,
                  layer_kwargs=dict(kernel_dim=64, init_scale=1, mode='cat_cos', decay_min=1.0, decay_max=3.0)),
}


def _s4d_lra(task: str, pretrained: bool, kwargs: dict) -> SeqNet:
    defaults = {'layer': 's4d', 'embed_dim': 256, 'depth': 6, **_S4D_CONFIGS[task]}
    defaults['layer_kwargs'] = {**_S4D_LAYER, **defaults.get('layer_kwargs', {})}
    return _create_seqnet(f's4d_lra_{task}', pretrained, **_merge(defaults, kwargs))


def _sgconv_lra(task: str, pretrained: bool, kwargs: dict) -> SeqNet:
    defaults = {'layer': 'sgconv', 'embed_dim': 256, 'depth': 6, **_SGCONV_CONFIGS[task]}
    defaults['layer_kwargs'] = {**_SGCONV_LAYER, **defaults.get('layer_kwargs', {})}
    return _create_seqnet(f'sgconv_lra_{task}', pretrained, **_merge(defaults, kwargs))


@register_model
def s4d_lra_listops(pretrained=False, **kwargs) -> SeqNet:
    """S4D, LRA ListOps: 8 x 128, post-norm BatchNorm, L 2048."""
    return _s4d_lra('listops', pretrained, kwargs)


@register_model
def s4d_lra_text(pretrained=False, **kwargs) -> SeqNet:
    """S4D, LRA Text (IMDB bytes): 6 x 256, pre-norm BatchNorm, L 4096."""
    return _s4d_lra('text', pretrained, kwargs)


@register_model
def s4d_lra_retrieval(pretrained=False, **kwargs) -> SeqNet:
    """S4D, LRA Retrieval (AAN pairs): 6 x 256, pre-norm BatchNorm, 2 x L 4000, [a, b, a-b, a*b] MLP head."""
    return _s4d_lra('retrieval', pretrained, kwargs)


@register_model
def s4d_lra_image(pretrained=False, **kwargs) -> SeqNet:
    """S4D, LRA Image (grayscale CIFAR-10): 6 x 512, post-norm LayerNorm, tied dropout 0.1, n_ssm 2, L 1024."""
    return _s4d_lra('image', pretrained, kwargs)


@register_model
def s4d_lra_pathfinder(pretrained=False, **kwargs) -> SeqNet:
    """S4D, LRA Pathfinder (32 x 32): 6 x 256, pre-norm BatchNorm, last-position pooling, L 1024."""
    return _s4d_lra('pathfinder', pretrained, kwargs)


@register_model
def s4d_lra_pathx(pretrained=False, **kwargs) -> SeqNet:
    """S4D, LRA Path-X (128 x 128): 6 x 256, pre-norm BatchNorm, dt_min 1e-4, SSM lr 5e-4, L 16384."""
    return _s4d_lra('pathx', pretrained, kwargs)


@register_model
def sgconv_lra_listops(pretrained=False, **kwargs) -> SeqNet:
    """SGConv, LRA ListOps: 8 x 128, post-norm BatchNorm, kernel_dim 1 (12 scales), L 2048."""
    return _sgconv_lra('listops', pretrained, kwargs)


@register_model
def sgconv_lra_text(pretrained=False, **kwargs) -> SeqNet:
    """SGConv, LRA Text: 6 x 256, pre-norm BatchNorm, kernel_dim 2, L 4096."""
    return _sgconv_lra('text', pretrained, kwargs)


@register_model
def sgconv_lra_retrieval(pretrained=False, **kwargs) -> SeqNet:
    """SGConv, LRA Retrieval: 6 x 256, pre-norm BatchNorm, kernel_dim 1, 2 x L 4000, pair MLP head."""
    return _sgconv_lra('retrieval', pretrained, kwargs)


@register_model
def sgconv_lra_image(pretrained=False, **kwargs) -> SeqNet:
    """SGConv, LRA Image: 6 x 512, post-norm LayerNorm, tied dropout 0.2, kernel_dim 32, fixed decay, L 1024."""
    return _sgconv_lra('image', pretrained, kwargs)


@register_model
def sgconv_lra_pathfinder(pretrained=False, **kwargs) -> SeqNet:
    """SGConv, LRA Pathfinder: 6 x 256, pre-norm BatchNorm, dropout 0.2, kernel_dim 32, last pooling, L 1024."""
    return _sgconv_lra('pathfinder', pretrained, kwargs)


@register_model
def sgconv_lra_pathx(pretrained=False, **kwargs) -> SeqNet:
    """SGConv, LRA Path-X: 6 x 256, pre-norm BatchNorm, kernel_dim 64, init_scale 1, cosine init, L 16384."""
    return _sgconv_lra('pathx', pretrained, kwargs)
